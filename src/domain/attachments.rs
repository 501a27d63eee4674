//! Which media an event names: the addresses of its attachment and thumbnail.
//!
//! Stand-down deletes every attachment of an incident. Synapse cannot list what
//! end-to-end-encrypted events point to, and once a message is redacted (by retention, a
//! moderator or its sender) nobody can read its addresses any more, so cordon notes them
//! as it first sees each event: in sync, in the retention sweep before it redacts, and
//! in the seal. Sync and the sweep read an event's content through [`media_addresses`];
//! the seal still has a private copy of the older list (without an edit's thumbnails),
//! to be replaced by this one so that all three agree on what counts.
//!
//! Only messages (`m.room.message`, edits through their `m.new_content` included) and
//! stickers count. Other events' addresses are not incident content: a member event's
//! `avatar_url` is the person's own profile picture.
//!
//! Pure: it takes the decrypted content as JSON and returns addresses; reading at most
//! eight fixed places, whatever the content holds.

use std::collections::BTreeSet;

use matrix_sdk::ruma::MxcUri;
use serde_json::Value;

/// The event types whose content may name an attachment.
pub const MEDIA_EVENT_TYPES: [&str; 2] = ["m.room.message", "m.sticker"];

/// Where a message or sticker names media: the file (plain `url`, or the encrypted
/// `file.url`) and its thumbnail (plain or encrypted), in the content itself and in an
/// edit's replacement content.
const POINTERS: [&str; 8] = [
    "/url",
    "/file/url",
    "/info/thumbnail_url",
    "/info/thumbnail_file/url",
    "/m.new_content/url",
    "/m.new_content/file/url",
    "/m.new_content/info/thumbnail_url",
    "/m.new_content/info/thumbnail_file/url",
];

/// Every well-formed `mxc://` address that an event of `event_type` with (decrypted)
/// `content` names, sorted and without repeats. Empty for other event types.
pub fn media_addresses(event_type: &str, content: &Value) -> Vec<String> {
    if !MEDIA_EVENT_TYPES.contains(&event_type) {
        return Vec::new();
    }
    let found: BTreeSet<String> = POINTERS
        .iter()
        .filter_map(|pointer| content.pointer(pointer).and_then(Value::as_str))
        .filter(|address| is_media_address(address))
        .map(str::to_owned)
        .collect();
    found.into_iter().collect()
}

/// True for a valid `mxc://server/media-id` address.
fn is_media_address(address: &str) -> bool {
    address.starts_with("mxc://") && <&MxcUri>::from(address).is_valid()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_encrypted_image_names_its_file_and_its_encrypted_thumbnail() {
        let content = json!({
            "msgtype": "m.image",
            "body": "chest-xray.png",
            "file": { "url": "mxc://hs.example/file", "key": {}, "iv": "", "hashes": {} },
            "info": {
                "mimetype": "image/png",
                "thumbnail_file": { "url": "mxc://hs.example/thumb" },
            },
        });
        assert_eq!(
            media_addresses("m.room.message", &content),
            ["mxc://hs.example/file", "mxc://hs.example/thumb"]
        );
    }

    #[test]
    fn a_plain_file_names_its_url_and_thumbnail_url() {
        let content = json!({
            "msgtype": "m.file",
            "body": "handover.pdf",
            "url": "mxc://hs.example/pdf",
            "info": { "thumbnail_url": "mxc://hs.example/pdf-thumb" },
        });
        assert_eq!(
            media_addresses("m.room.message", &content),
            ["mxc://hs.example/pdf", "mxc://hs.example/pdf-thumb"]
        );
    }

    #[test]
    fn an_edit_names_the_media_of_its_replacement_content() {
        let content = json!({
            "msgtype": "m.image",
            "body": "* new scan",
            "file": { "url": "mxc://hs.example/new" },
            "m.new_content": {
                "msgtype": "m.image",
                "body": "new scan",
                "file": { "url": "mxc://hs.example/new" },
                "info": { "thumbnail_file": { "url": "mxc://hs.example/new-thumb" } },
            },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$old" },
        });
        assert_eq!(
            media_addresses("m.room.message", &content),
            ["mxc://hs.example/new", "mxc://hs.example/new-thumb"],
            "each address once"
        );
        let plain_edit = json!({
            "m.new_content": { "url": "mxc://hs.example/a", "info": { "thumbnail_url": "mxc://hs.example/b" } },
        });
        assert_eq!(
            media_addresses("m.room.message", &plain_edit),
            ["mxc://hs.example/a", "mxc://hs.example/b"]
        );
    }

    #[test]
    fn a_sticker_names_its_image() {
        let content = json!({
            "body": "thumbs up",
            "url": "mxc://hs.example/sticker",
            "info": { "thumbnail_url": "mxc://hs.example/sticker-thumb" },
        });
        assert_eq!(
            media_addresses("m.sticker", &content),
            ["mxc://hs.example/sticker", "mxc://hs.example/sticker-thumb"]
        );
    }

    #[test]
    fn other_events_and_malformed_addresses_name_nothing() {
        // A member's avatar is their own profile picture, not incident content.
        let member = json!({ "membership": "join", "avatar_url": "mxc://hs.example/face", "url": "mxc://hs.example/x" });
        assert!(media_addresses("m.room.member", &member).is_empty());
        assert!(
            media_addresses("m.room.encrypted", &json!({ "url": "mxc://hs.example/x" })).is_empty()
        );
        let junk = json!({
            "url": "https://evil.example/x",
            "file": { "url": "mxc://" },
            "info": { "thumbnail_url": 7, "thumbnail_file": { "url": "mxc://no-media-id" } },
            "m.new_content": "not an object",
        });
        assert!(media_addresses("m.room.message", &junk).is_empty());
        assert!(media_addresses("m.room.message", &json!("text")).is_empty());
    }
}
