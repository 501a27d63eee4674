//! Fuzzes cordon's config parser: see `cordon_testkit::fuzz::config` for the property.

fn main() {
    afl::fuzz!(|data: &[u8]| cordon_testkit::fuzz::config(data));
}
