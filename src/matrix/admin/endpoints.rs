//! The Synapse admin endpoints, as ruma request and response types. ruma's macros
//! compile the client half (`OutgoingRequest`, `IncomingResponse`) under the crate's
//! `client` feature (see Cargo.toml).

use matrix_sdk::ruma::api::auth_scheme::AccessToken;
use matrix_sdk::ruma::api::{metadata, request, response};
use matrix_sdk::ruma::{OwnedMxcUri, OwnedRoomId, OwnedServerName, OwnedUserId};
use serde::Deserialize;
use serde_json::Value;

/// Whether a user is a server admin.
pub mod user_admin {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/users/{user_id}/admin",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
    }

    #[response]
    pub struct Response {
        #[serde(default)]
        pub admin: bool,
    }

    impl Request {
        pub fn new(user_id: OwnedUserId) -> Self {
            Self { user_id }
        }
    }
}

/// Lifts a user's message rate limits (0 and 0: none).
pub mod override_ratelimit {
    use super::*;

    metadata! {
        method: POST,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
        pub messages_per_second: u64,
        pub burst_count: u64,
    }

    #[response]
    pub struct Response {}

    impl Request {
        pub fn new(user_id: OwnedUserId) -> Self {
            Self {
                user_id,
                messages_per_second: 0,
                burst_count: 0,
            }
        }
    }
}

/// A user's rate-limit override, if any (an empty answer: none, the defaults apply).
pub mod get_ratelimit {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/users/{user_id}/override_ratelimit",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
    }

    #[response]
    pub struct Response {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub messages_per_second: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub burst_count: Option<u64>,
    }

    impl Request {
        pub fn new(user_id: OwnedUserId) -> Self {
            Self { user_id }
        }
    }
}

/// Deletes a room: members removed, events purged, the room blocked.
pub mod delete_room {
    use super::*;

    metadata! {
        method: DELETE,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/rooms/{room_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        pub purge: bool,
        pub block: bool,
        pub message: String,
    }

    #[response]
    pub struct Response {
        #[serde(default)]
        pub delete_id: Option<String>,
    }

    impl Request {
        pub fn new(room_id: OwnedRoomId, message: String) -> Self {
            Self {
                room_id,
                purge: true,
                block: true,
                message,
            }
        }
    }
}

/// Every deletion of a room Synapse remembers: `{"results": [{"status": …}]}`, kept
/// as JSON for [`super::deletion_status_of`].
pub mod room_delete_status {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/rooms/{room_id}/delete_status",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }

    impl Request {
        pub fn new(room_id: OwnedRoomId) -> Self {
            Self { room_id }
        }
    }
}

/// One deletion, by its id: `{"status": …}`.
pub mod delete_status {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub delete_id: String,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }

    impl Request {
        pub fn new(delete_id: String) -> Self {
            Self { delete_id }
        }
    }
}

/// A room's details; only whether it answers matters.
pub mod room_details {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms/{room_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {}

    impl Request {
        pub fn new(room_id: OwnedRoomId) -> Self {
            Self { room_id }
        }
    }
}

/// The media referenced from a room's unencrypted events.
pub mod room_media {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/room/{room_id}/media",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {
        #[serde(default)]
        pub local: Vec<OwnedMxcUri>,
        #[serde(default)]
        pub remote: Vec<OwnedMxcUri>,
    }

    impl Request {
        pub fn new(room_id: OwnedRoomId) -> Self {
            Self { room_id }
        }
    }
}

/// Who uploaded a piece of local media.
pub mod media {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/media/{server_name}/{media_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub server_name: OwnedServerName,
        #[ruma_api(path)]
        pub media_id: String,
    }

    #[response]
    pub struct Response {
        #[serde(default)]
        pub media_info: Option<MediaInfo>,
    }

    /// The part of `media_info` cordon reads.
    #[derive(Clone, Debug, Deserialize, serde::Serialize)]
    pub struct MediaInfo {
        /// The uploader; absent for media Synapse made itself (URL previews).
        #[serde(default)]
        pub user_id: Option<String>,
    }

    impl Request {
        pub fn new(server_name: OwnedServerName, media_id: String) -> Self {
            Self {
                server_name,
                media_id,
            }
        }
    }
}

/// Deletes a piece of local media.
pub mod delete_media {
    use super::*;

    metadata! {
        method: DELETE,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/media/{server_name}/{media_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub server_name: OwnedServerName,
        #[ruma_api(path)]
        pub media_id: String,
    }

    #[response]
    pub struct Response {
        #[serde(default)]
        pub total: u64,
    }

    impl Request {
        pub fn new(server_name: OwnedServerName, media_id: String) -> Self {
            Self {
                server_name,
                media_id,
            }
        }
    }
}

/// A user's account, for whether it is deactivated.
pub mod user {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/users/{user_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
    }

    #[response]
    pub struct Response {
        #[serde(default)]
        pub deactivated: Option<Value>,
    }

    impl Request {
        pub fn new(user_id: OwnedUserId) -> Self {
            Self { user_id }
        }
    }
}
