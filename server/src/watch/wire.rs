//! What a `WatchStatus` stream sends, on the wire.
//!
//! A thousand streams of one company send the same event with the same run status: only the
//! resume token differs, and streams at the same marks share that too. [`EncodedEvent`] is the
//! event's `RunEvent` encoded once; [`event_bytes`] wraps it and a token into the
//! `WatchStatusResponse` encoding prost itself would produce (field `event` = 2, then
//! `resume_token` = 4), so clients see the same bytes; [`FrameCodec`] sends those as they are.
//!
//! The server serves `WatchStatus` with tonic's server-streaming handler and this codec
//! (`api::WatchRoute`); the generated trait method still answers with decoded messages for any
//! other caller.

use std::pin::Pin;

use bytes::Bytes;
use etter_proto::v1 as pb;
use futures::{Stream, StreamExt as _};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

/// The stream type of `WatchStatus` in the generated trait.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchStatusResponse, Status>> + Send + 'static>>;

/// What a `WatchStatus` stream sends, as the server's watch route serves it.
pub type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;

/// The `WatchStatusResponse` field numbers the codec writes (they are the contract's).
const EVENT_FIELD: u32 = 2;
const RESUME_TOKEN_FIELD: u32 = 4;

/// A `RunEvent` (with the run's status) encoded once, shared by every stream that sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedEvent(Bytes);

impl EncodedEvent {
    /// Encodes `event`.
    pub fn new(event: &pb::RunEvent) -> Self {
        Self(Bytes::from(event.encode_to_vec()))
    }
}

/// One message of a watch stream.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A message encoded when it is sent (snapshots, heartbeats, one-run events).
    Message(Box<pb::WatchStatusResponse>),
    /// A `WatchStatusResponse` encoded earlier, sent as it is (see [`event_bytes`]).
    Encoded(Bytes),
}

/// The `WatchStatusResponse` that carries `event` and `resume_token`, encoded.
pub fn event_bytes(event: &EncodedEvent, resume_token: &str) -> Bytes {
    let mut buf = Vec::with_capacity(event.0.len() + resume_token.len() + 16);
    encode_key(EVENT_FIELD, WireType::LengthDelimited, &mut buf);
    encode_varint(event.0.len() as u64, &mut buf);
    buf.extend_from_slice(&event.0);
    if !resume_token.is_empty() {
        encode_key(RESUME_TOKEN_FIELD, WireType::LengthDelimited, &mut buf);
        encode_varint(resume_token.len() as u64, &mut buf);
        buf.extend_from_slice(resume_token.as_bytes());
    }
    Bytes::from(buf)
}

impl Frame {
    /// The message this frame encodes.
    pub fn into_message(self) -> Result<pb::WatchStatusResponse, Status> {
        match self {
            Frame::Message(message) => Ok(*message),
            Frame::Encoded(bytes) => pb::WatchStatusResponse::decode(bytes)
                .map_err(|e| Status::internal(format!("an encoded watch message: {e}"))),
        }
    }

    fn encode(&self, buf: &mut impl bytes::BufMut) {
        match self {
            Frame::Message(message) => message.encode_raw(buf),
            Frame::Encoded(bytes) => buf.put_slice(bytes),
        }
    }
}

/// Encodes [`Frame`]s and decodes `WatchStatusRequest`s.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Frame;
    type Decode = pb::WatchStatusRequest;
    type Encoder = FrameEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::WatchStatusRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

/// See [`FrameCodec`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf);
        Ok(())
    }
}

/// The generated trait's stream: frames turned back into messages.
pub fn messages(frames: FrameStream) -> WatchStream {
    Box::pin(frames.map(|frame| frame.and_then(Frame::into_message)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(sequence: u64, steps: usize) -> pb::RunEvent {
        pb::RunEvent {
            workflow_id: "role-onboard-cr-acme-analyst-1".to_owned(),
            sequence,
            event_time: Some(prost_types::Timestamp { seconds: 1_790_000_000, nanos: 7 }),
            change: Some(pb::run_event::Change::StepChange(pb::StepChange {
                step: "extract".to_owned(),
                status: pb::StepState::Completed.into(),
                attempt: 1,
                error: None,
            })),
            run: Some(pb::RunStatus {
                workflow_id: "role-onboard-cr-acme-analyst-1".to_owned(),
                progress: Some(pb::Progress {
                    current: 1,
                    total: i32::try_from(steps).unwrap_or(i32::MAX),
                    steps: (0..steps)
                        .map(|i| pb::StepProgress { name: format!("step-{i}"), ..pb::StepProgress::default() })
                        .collect(),
                }),
                ..pb::RunStatus::default()
            }),
        }
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        buf
    }

    proptest! {
        /// A frame's bytes are the bytes prost writes for the same message, so every client
        /// decodes what it would have decoded from a message encoded per stream.
        #[test]
        fn an_encoded_event_frame_is_the_message_prost_would_write(
            sequence in 0u64..u64::MAX,
            steps in 0usize..40,
            resume_token in "[A-Za-z0-9._-]{0,300}",
        ) {
            let event = event(sequence, steps);
            let frame = Frame::Encoded(event_bytes(&EncodedEvent::new(&event), &resume_token));
            let message = pb::WatchStatusResponse {
                kind: Some(pb::watch_status_response::Kind::Event(event)),
                resume_token,
            };
            prop_assert_eq!(encoded(&frame), message.encode_to_vec());
            prop_assert_eq!(pb::WatchStatusResponse::decode(encoded(&frame).as_slice()).ok(), Some(message.clone()));
            prop_assert_eq!(frame.into_message().ok(), Some(message));
        }
    }

    #[test]
    fn a_message_frame_is_the_message() {
        let message = pb::WatchStatusResponse {
            kind: Some(pb::watch_status_response::Kind::Heartbeat(pb::Heartbeat::default())),
            resume_token: "w2.abc".to_owned(),
        };
        assert_eq!(encoded(&Frame::Message(Box::new(message.clone()))), message.encode_to_vec());
    }
}
