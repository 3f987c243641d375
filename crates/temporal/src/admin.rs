//! The one call of Temporal's admin service the server makes: asking the cluster to generate a
//! workflow's pending tasks again (`RefreshWorkflowTasks`, what `tdbg workflow refresh-tasks`
//! does by hand).
//!
//! A workflow task can be lost by the cluster when its processes are killed while its database
//! restarts: the task stays SCHEDULED without ever reaching a worker, or STARTED without its
//! timeout ever firing, and the workflow waits for ever. Refreshing regenerates the transfer task
//! that hands a scheduled task to the task queue, or the timer that times out a started one; the
//! workflow's history and run id are unchanged.
//!
//! The admin service is served by the frontend on the same address, authorized by the cluster's
//! admin role (`temporal-system:admin` with the default authorizer); Temporal Cloud does not offer
//! it. Its protos are internal to the server and not in the SDK, so the two messages this call
//! needs are declared here, field for field as the server's
//! `temporal/server/api/adminservice/v1/request_response.proto` has them.

use std::time::Duration;

use tonic::{
    Status,
    codegen::http::uri::PathAndQuery,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use crate::Endpoint;

const REFRESH_WORKFLOW_TASKS: &str = "/temporal.server.api.adminservice.v1.AdminService/RefreshWorkflowTasks";

/// `temporal.api.common.v1.WorkflowExecution`.
#[derive(Clone, PartialEq, prost::Message)]
struct WorkflowExecution {
    #[prost(string, tag = "1")]
    workflow_id: String,
    #[prost(string, tag = "2")]
    run_id: String,
}

/// `temporal.server.api.adminservice.v1.RefreshWorkflowTasksRequest` (the archetype fields left
/// unset: a workflow).
#[derive(Clone, PartialEq, prost::Message)]
struct RefreshWorkflowTasksRequest {
    #[prost(message, optional, tag = "2")]
    execution: Option<WorkflowExecution>,
    #[prost(string, tag = "3")]
    namespace_id: String,
}

/// `temporal.server.api.adminservice.v1.RefreshWorkflowTasksResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct RefreshWorkflowTasksResponse {}

/// A client of the frontend's admin service, over the endpoint's TLS and API key. Connects on
/// first use; cheap to clone.
#[derive(Clone)]
pub struct AdminClient {
    channel: Channel,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    call_timeout: Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient").field("call_timeout", &self.call_timeout).finish_non_exhaustive()
    }
}

/// Why an admin client could not be made from the configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot make an admin client for Temporal at {address}: {reason}")]
pub struct AdminClientError {
    address: String,
    reason: String,
}

impl Endpoint {
    /// A client of the admin service at this endpoint; each call gives up after `call_timeout`.
    pub fn admin(&self, call_timeout: Duration) -> Result<AdminClient, AdminClientError> {
        let error = |reason: String| AdminClientError { address: self.address.clone(), reason };
        let mut endpoint =
            Channel::from_shared(self.url.to_string()).map_err(|e| error(e.to_string()))?.timeout(call_timeout);
        if let Some(tls) = &self.tls {
            let mut config = ClientTlsConfig::new();
            config = match &tls.server_root_ca_cert {
                Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
                None => config.with_native_roots(),
            };
            if let Some(domain) = &tls.domain {
                config = config.domain_name(domain.clone());
            }
            if let Some(client) = &tls.client_tls_options {
                config = config.identity(Identity::from_pem(&client.client_cert, &client.client_private_key));
            }
            endpoint = endpoint.tls_config(config).map_err(|e| error(e.to_string()))?;
        }
        let authorization = match &self.api_key {
            Some(key) => Some(
                format!("Bearer {key}")
                    .parse()
                    .map_err(|_| error("temporal.api_key is not a valid header value".to_owned()))?,
            ),
            None => None,
        };
        Ok(AdminClient { channel: endpoint.connect_lazy(), authorization, call_timeout })
    }
}

impl AdminClient {
    /// Asks the cluster to generate the pending tasks of one execution again: a workflow task
    /// SCHEDULED is handed to its task queue again, a STARTED one gets its timeout timer again
    /// (a duplicate is discarded by the cluster). `namespace_id` is the namespace's id (not its
    /// name), as DescribeNamespace answers it.
    pub async fn refresh_workflow_tasks(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<(), Status> {
        let message = RefreshWorkflowTasksRequest {
            execution: Some(WorkflowExecution { workflow_id: workflow_id.to_owned(), run_id: run_id.to_owned() }),
            namespace_id: namespace_id.to_owned(),
        };
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.call_timeout);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| Status::unavailable(format!("the frontend is not reachable: {e}")))?;
        let codec = tonic_prost::ProstCodec::<RefreshWorkflowTasksRequest, RefreshWorkflowTasksResponse>::default();
        grpc.unary(request, PathAndQuery::from_static(REFRESH_WORKFLOW_TASKS), codec).await.map(drop)
    }
}
