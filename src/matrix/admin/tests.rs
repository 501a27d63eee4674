use matrix_sdk::ruma::api::auth_scheme::SendAccessToken;

use super::*;

#[test]
fn the_newest_deletion_decides() {
    let body = json!({ "results": [
        { "delete_id": "a", "status": "failed", "error": "boom" },
        { "delete_id": "b", "status": "purging" },
    ]});
    assert_eq!(
        deletion_status_of(&body),
        DeletionStatus::Running("purging".into())
    );
    let done = json!({ "results": [
        { "delete_id": "b", "status": "complete" },
        { "delete_id": "a", "status": "failed", "error": "boom" },
    ]});
    assert_eq!(deletion_status_of(&done), DeletionStatus::Complete);
    let failed = json!({ "results": [{ "status": "failed", "error": "boom" }] });
    assert_eq!(
        deletion_status_of(&failed),
        DeletionStatus::Failed("boom".into())
    );
    assert_eq!(deletion_status_of(&json!({})), DeletionStatus::Unknown);
}

#[test]
fn a_scheduled_deletion_is_running_and_a_cancelled_one_failed() {
    // The by-id answer is one task, wrapped as the by-room list is.
    let scheduled = json!({ "results": [{ "delete_id": "a", "status": "scheduled" }] });
    assert_eq!(
        deletion_status_of(&scheduled),
        DeletionStatus::Running("scheduled".into())
    );
    let cancelled = json!({ "results": [{ "delete_id": "a", "status": "cancelled" }] });
    assert!(matches!(
        deletion_status_of(&cancelled),
        DeletionStatus::Failed(_)
    ));
}

/// The path a request goes to on `https://hs.example`.
fn path_of<R>(request: R) -> String
where
    R: OutgoingRequest<Authentication = AccessToken, PathBuilder = SinglePath>,
{
    request
        .try_into_http_request::<Vec<u8>>(
            "https://hs.example",
            SendAccessToken::IfRequired("token"),
            (),
        )
        .unwrap()
        .uri()
        .path()
        .to_owned()
}

#[test]
fn user_ids_are_encoded_as_one_path_segment() {
    let user = matrix_sdk::ruma::owned_user_id!("@cordon:nhs.example");
    assert_eq!(
        path_of(endpoints::user_admin::Request::new(user)),
        // ruma keeps `@` and `:`, which a path segment may hold (RFC 3986 pchar).
        "/_synapse/admin/v1/users/@cordon:nhs.example/admin"
    );
    let server = matrix_sdk::ruma::owned_server_name!("nhs.example");
    assert_eq!(
        path_of(endpoints::media::Request::new(server, "a/b".into())),
        "/_synapse/admin/v1/media/nhs.example/a%2Fb"
    );
}
