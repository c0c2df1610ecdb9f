//! Maps one authorised request to the node's actors and back to a response.

use chorus_actors::{Caller, NodeHandle};
use chorus_protocol::{ErrorCode, Request, Response};

/// Answers one request made by `caller`.
pub async fn dispatch(
    node: &NodeHandle,
    caller: &Caller,
    request: Request,
) -> Result<Response, ErrorCode> {
    if !caller.role.allows(request.required_role()) {
        return Err(ErrorCode::Forbidden);
    }
    // Shapes (batch sizes, page limits, name lengths) are checked by the node handle,
    // which every caller goes through.
    match request {
        Request::Submit(item) => node.submit(caller, item).await.map(Response::Receipt),
        Request::SubmitBatch(items) => node.submit_batch(caller, items).await.map(Response::Batch),
        Request::Get(id) => node
            .get(id)
            .await
            .map(|found| Response::Item(found.map(Box::new))),
        Request::ListByUser {
            user_id,
            after,
            limit,
        } => node
            .list_by_user(user_id, after, limit)
            .await
            .map(|(items, next)| Response::Page { items, next }),
        Request::CreateApiKey { role, name } => node
            .create_api_key(role, name)
            .await
            .map(|key| Response::ApiKeyCreated { key, role }),
    }
}
