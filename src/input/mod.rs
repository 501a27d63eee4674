//! What people write and cordon reads: located diagnostics (`file:line:col: error:
//! message`), bounded YAML, the playbook language and cordon's own configuration.
//!
//! The bottom layer: it imports nothing else of cordon's, and every file here turns
//! bad input into all of its problems at once, never a panic.
//!
//! - [`diagnostic`]: one located error with its source line.
//! - [`yaml`]: bounded YAML loading (size, depth and alias limits) that turns every
//!   syntax or shape problem into [`diagnostic::Diagnostic`]s.
//! - [`playbook`]: the playbook language planners write: schema, semantic validation,
//!   `cordon check`, and the JSON Schema export for editors.
//! - [`config`]: the bot's own configuration, read in two phases (raw file, then a
//!   validated form built once).

pub mod config;
pub mod diagnostic;
pub mod playbook;
pub mod yaml;
