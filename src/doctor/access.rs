//! Who the service user is, and whether it may read or write a path.
//!
//! The service user is the one `cordon run` runs as. When doctor runs as that user,
//! the kernel answers (`access(2)`). Operators often run `sudo cordon doctor`, and
//! root may read anything; then the service user is the owner of the state directory
//! (or, before it exists, the account `cordon` that docs/deploy.md creates), and its
//! access is judged from each file's mode bits and ownership: the owner's bits when it
//! owns the file, the group's when the file's group is one of its groups (from
//! `/etc/passwd` and `/etc/group`), else the others'. Every directory on the way needs
//! its search (x) bit. ACLs and capabilities are not read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The account whose access the checks judge.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    /// Its uid.
    pub uid: u32,
    /// Its name, when `/etc/passwd` has it.
    pub name: Option<String>,
    /// Its primary group and the groups `/etc/group` lists it in.
    pub groups: Vec<u32>,
    /// Whether doctor runs as this user (then the kernel is asked).
    pub is_current: bool,
    /// Why this is the service user.
    why: String,
}

/// What is wanted of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Read a file (or list a directory).
    Read,
    /// Create and remove files in a directory (write and search).
    Write,
}

impl ServiceUser {
    /// The service user for a config whose state directory is `state_dir`.
    pub fn find(state_dir: &Path) -> Self {
        let current = current_uid();
        if current != 0 {
            return Self::with_uid(current, true, "who runs doctor".to_owned());
        }
        if let Ok(meta) = std::fs::metadata(state_dir) {
            let uid = meta.uid();
            return Self::with_uid(
                uid,
                uid == current,
                format!("the owner of the state directory {}", state_dir.display()),
            );
        }
        if let Some(entry) = passwd().into_iter().find(|e| e.name == "cordon") {
            return Self::with_uid(
                entry.uid,
                entry.uid == current,
                format!(
                    "the account docs/deploy.md creates (the state directory {} does not \
                     exist yet)",
                    state_dir.display()
                ),
            );
        }
        Self::with_uid(
            current,
            true,
            format!(
                "who runs doctor (the state directory {} does not exist yet, and there is \
                 no account `cordon`)",
                state_dir.display()
            ),
        )
    }

    /// The user `uid`, as the system's account files describe it.
    pub fn with_uid(uid: u32, is_current: bool, why: String) -> Self {
        let entry = passwd().into_iter().find(|e| e.uid == uid);
        let mut groups: Vec<u32> = entry.iter().map(|e| e.gid).collect();
        if let Some(name) = entry.as_ref().map(|e| e.name.as_str()) {
            groups.extend(member_groups(name));
        }
        Self {
            uid,
            name: entry.map(|e| e.name),
            groups,
            is_current,
            why,
        }
    }

    /// `cordon (uid 10001)`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }

    /// The sentence that says whose access the checks judge, and how.
    pub fn describe(&self) -> String {
        let how = if self.is_current {
            "access is as the kernel answers it".to_owned()
        } else {
            format!(
                "doctor runs as uid {}, so access is judged from mode bits and ownership",
                current_uid()
            )
        };
        format!("the service user {}, {}; {how}", self.label(), self.why)
    }

    /// Whether this user may do `want` with `path`; `Err` says why not, naming the
    /// file (or directory on the way) that stops it, its mode and owner.
    pub fn may(&self, path: &Path, want: Want) -> Result<(), String> {
        if self.is_current {
            use rustix::fs::Access;
            let mode = match want {
                Want::Read => Access::READ_OK,
                Want::Write => Access::WRITE_OK | Access::EXEC_OK,
            };
            return rustix::fs::access(path, mode).map_err(|e| {
                format!(
                    "{}: {} ({})",
                    path.display(),
                    std::io::Error::from(e),
                    describe_file(path)
                )
            });
        }
        if self.uid == 0 {
            return Ok(());
        }
        // Every directory on the way must be searchable.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut ancestors: Vec<PathBuf> = absolute
            .ancestors()
            .skip(1)
            .map(Path::to_path_buf)
            .collect();
        ancestors.reverse();
        for dir in ancestors {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            if !permits(
                self.uid,
                &self.groups,
                meta.uid(),
                meta.gid(),
                meta.mode(),
                0o1,
            ) {
                return Err(format!(
                    "the directory {} on the way is not searchable by {} ({})",
                    dir.display(),
                    self.label(),
                    describe_meta(&meta)
                ));
            }
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bits = match want {
            Want::Read if meta.is_dir() => 0o5,
            Want::Read => 0o4,
            Want::Write => 0o3,
        };
        if permits(
            self.uid,
            &self.groups,
            meta.uid(),
            meta.gid(),
            meta.mode(),
            bits,
        ) {
            Ok(())
        } else {
            let verb = match want {
                Want::Read => "readable",
                Want::Write => "writable",
            };
            Err(format!(
                "{} is not {verb} by {} ({})",
                path.display(),
                self.label(),
                describe_meta(&meta)
            ))
        }
    }
}

/// Whether the mode bits `mode` of a file owned by `file_uid`:`file_gid` give a user
/// (`uid`, in `groups`) every bit of `want` (4 read, 2 write, 1 search), as the kernel
/// decides it: the owner's bits for the owner, else the group's for a member, else the
/// others'.
pub fn permits(
    uid: u32,
    groups: &[u32],
    file_uid: u32,
    file_gid: u32,
    mode: u32,
    want: u32,
) -> bool {
    let bits = if uid == file_uid {
        (mode >> 6) & 0o7
    } else if groups.contains(&file_gid) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    bits & want == want
}

/// `mode 0640, owner root:cordon`.
pub fn describe_meta(meta: &std::fs::Metadata) -> String {
    format!(
        "mode {:04o}, owner {}:{}",
        meta.mode() & 0o7777,
        user_name(meta.uid()),
        group_name(meta.gid())
    )
}

/// [`describe_meta`] of `path`, or why it cannot be read.
fn describe_file(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => describe_meta(&meta),
        Err(e) => e.to_string(),
    }
}

/// The uid doctor runs as (the owner of `/proc/self`).
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// A user's name, or its uid.
pub fn user_name(uid: u32) -> String {
    passwd()
        .into_iter()
        .find(|e| e.uid == uid)
        .map_or_else(|| uid.to_string(), |e| e.name)
}

/// A group's name, or its gid.
pub fn group_name(gid: u32) -> String {
    groups()
        .into_iter()
        .find(|g| g.gid == gid)
        .map_or_else(|| gid.to_string(), |g| g.name)
}

/// One line of `/etc/passwd`.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One line of `/etc/group`.
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn passwd() -> Vec<PasswdEntry> {
    parse_passwd(&std::fs::read_to_string("/etc/passwd").unwrap_or_default())
}

fn groups() -> Vec<GroupEntry> {
    parse_group(&std::fs::read_to_string("/etc/group").unwrap_or_default())
}

/// The groups that list `name` as a member.
fn member_groups(name: &str) -> Vec<u32> {
    groups()
        .into_iter()
        .filter(|g| g.members.iter().any(|m| m == name))
        .map(|g| g.gid)
        .collect()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.to_owned();
            let uid = f.nth(1)?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some(PasswdEntry { name, uid, gid })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.to_owned();
            let gid = f.nth(1)?.parse().ok()?;
            let members = f
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            Some(GroupEntry { name, gid, members })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_judged_by_the_owner_bits_alone() {
        // 0077: everyone but the owner may read.
        assert!(!permits(10, &[10], 10, 10, 0o077, 0o4));
        assert!(permits(10, &[10], 10, 10, 0o600, 0o6));
    }

    #[test]
    fn a_member_of_the_files_group_gets_the_group_bits() {
        assert!(permits(10, &[10, 20], 0, 20, 0o640, 0o4));
        assert!(!permits(10, &[10, 20], 0, 20, 0o640, 0o2));
        assert!(!permits(10, &[10], 0, 20, 0o640, 0o4));
    }

    #[test]
    fn anyone_else_gets_the_other_bits() {
        assert!(permits(10, &[10], 0, 0, 0o644, 0o4));
        assert!(!permits(10, &[10], 0, 0, 0o640, 0o4));
    }

    #[test]
    fn account_files_are_read_line_by_line() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\ncordon:x:10001:10001::/var/lib/cordon:/usr/sbin/nologin\nbroken\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(
            (users[1].name.as_str(), users[1].uid, users[1].gid),
            ("cordon", 10001, 10001)
        );
        let groups = parse_group("cordon-prevention:x:998:matrix-synapse,cordon\nempty:x:5:\n");
        assert_eq!(groups[0].members, vec!["matrix-synapse", "cordon"]);
        assert!(groups[1].members.is_empty());
    }

    #[test]
    fn a_file_closed_to_the_service_user_is_named_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let owner = std::fs::metadata(&file).unwrap().uid();
        // Someone who neither owns the file nor shares its group.
        let other = ServiceUser {
            uid: owner.wrapping_add(4242),
            name: None,
            groups: vec![],
            is_current: false,
            why: String::new(),
        };
        // The temporary directory itself may be closed to them too; either way the
        // answer names what stops them.
        let why = other.may(&file, Want::Read).unwrap_err();
        assert!(why.contains("mode 0"), "{why}");
    }
}
