//! The fan-out's floor: `etter-bench relay`, a bare tonic server in a process of its own that
//! watches the company through etter-server on one stream and copies every event message it
//! gets, as the bytes it got them, into each of its own `WatchStatus` streams. No store, no
//! authentication, no status to build, no resume token to make: per message it does only what
//! any server must to send bytes it already has (tonic's stream body, HTTP/2 framing, the
//! socket write). Its latency includes the one upstream stream's (the scenario's one-stream row).

use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, bail};
use bytes::{Buf as _, BufMut as _, Bytes};
use etter_proto::v1::{Snapshot, WatchStatusRequest, WatchStatusResponse, watch_status_request, watch_status_response};
use futures::{Stream, StreamExt as _};
use prost::Message as _;
use tokio::sync::broadcast;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The one method the relay serves.
const PATH: &str = "/etter.pipeline.v1.PipelineService/WatchStatus";
/// Messages a slow stream may fall behind before it is ended (the scenario then fails).
const BACKLOG: usize = 4096;

/// Sends and receives messages as the bytes they are.
#[derive(Debug, Default, Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

type RawStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// A downstream `WatchStatus`: the last snapshot message (empty: the relay has no runs to
/// show), then every event as it comes.
struct Watch {
    events: broadcast::Sender<Bytes>,
    snapshot: Bytes,
}

impl tonic::server::ServerStreamingService<Bytes> for Watch {
    type Response = Bytes;
    type ResponseStream = RawStream;
    type Future = std::future::Ready<Result<Response<RawStream>, Status>>;

    fn call(&mut self, _: Request<Bytes>) -> Self::Future {
        let receiver = self.events.subscribe();
        let events = futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(bytes) => Some((Ok(bytes), receiver)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some((Err(Status::data_loss(format!("this stream fell {n} messages behind"))), receiver))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        let stream = futures::stream::once(std::future::ready(Ok(self.snapshot.clone()))).chain(events);
        std::future::ready(Ok(Response::new(Box::pin(stream) as RawStream)))
    }
}

/// The relay's gRPC service: `WatchStatus` only.
#[derive(Clone)]
struct Relay {
    events: broadcast::Sender<Bytes>,
    snapshot: Bytes,
}

impl tonic::server::NamedService for Relay {
    const NAME: &'static str = "etter.pipeline.v1.PipelineService";
}

impl<B> tonic::codegen::Service<http::Request<B>> for Relay
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let watch = Watch { events: self.events.clone(), snapshot: self.snapshot.clone() };
        Box::pin(async move {
            if request.uri().path() != PATH {
                return Ok(Status::unimplemented("the relay serves WatchStatus only").into_http());
            }
            Ok(tonic::server::Grpc::new(Raw).server_streaming(watch, request).await)
        })
    }
}

/// `etter-bench relay <grpc_addr> <token> <company>`: watches `company` through the etter-server
/// at `grpc_addr` as the bearer of `token`, serves the relay on a loopback port of its own, and
/// prints its readiness line once the upstream stream sent its snapshot.
pub async fn serve(addr: &str, token: &str, company: &str) -> Result<()> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("etter-server is not ready")?;
    let watch = WatchStatusRequest {
        scope: Some(watch_status_request::Scope::CompanyId(company.to_owned())),
        ..WatchStatusRequest::default()
    };
    let mut request = Request::new(Bytes::from(watch.encode_to_vec()));
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let mut upstream = grpc
        .server_streaming(request, PathAndQuery::from_static(PATH), Raw)
        .await
        .context("watching the company through etter-server")?
        .into_inner();
    // The upstream's snapshot first: the relay is ready once it follows the company.
    loop {
        let message = upstream.message().await?.context("etter-server ended the stream before its snapshot")?;
        match WatchStatusResponse::decode(message)?.kind {
            Some(watch_status_response::Kind::Snapshot(snapshot)) if snapshot.last => break,
            Some(watch_status_response::Kind::Snapshot(_) | watch_status_response::Kind::Heartbeat(_)) => {}
            other => bail!("etter-server sent {other:?} before its last snapshot message"),
        }
    }
    let (events, _) = broadcast::channel(BACKLOG);
    let forward = events.clone();
    // Only events are relayed: they are what the scenario times. The upstream's end ends the
    // relay (below), and with it every downstream stream (the scenario then fails).
    let relayed = tokio::spawn(async move {
        while let Some(message) = upstream.message().await? {
            let kind = WatchStatusResponse::decode(message.clone())?.kind;
            if matches!(kind, Some(watch_status_response::Kind::Event(_))) {
                // An error here only says no stream is open yet (the harness opens its streams
                // before it pushes the roles).
                let _ = forward.send(message);
            }
        }
        anyhow::Ok(())
    });
    let snapshot = Bytes::from(
        WatchStatusResponse {
            kind: Some(watch_status_response::Kind::Snapshot(Snapshot { last: true, ..Snapshot::default() })),
            ..WatchStatusResponse::default()
        }
        .encode_to_vec(),
    );
    let relay = Relay { events, snapshot };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    println!("{}", serde_json::json!({ "ready": "etter-bench relay", "grpc_addr": local.to_string() }));
    let served = tonic::transport::Server::builder()
        .add_service(relay)
        // Nagle off, as etter-server has it.
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)));
    tokio::select! {
        served = served => served?,
        relayed = relayed => relayed.context("the relay's upstream task panicked")??,
    }
    Ok(())
}
