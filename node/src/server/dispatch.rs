//! Maps one authorised request to the node's actors and back to a response.

use chorus_actors::NodeHandle;
use chorus_protocol::{ErrorCode, Request, Response, Role};

/// Answers one request made with a key of role `role`.
pub async fn dispatch(
    node: &NodeHandle,
    role: Role,
    request: Request,
) -> Result<Response, ErrorCode> {
    if !role.allows(request.required_role()) {
        return Err(ErrorCode::Forbidden);
    }
    request.validate_shape()?;
    match request {
        Request::Submit(item) => node.submit(item).await.map(Response::Receipt),
        Request::SubmitBatch(items) => node.submit_batch(items).await.map(Response::Batch),
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
