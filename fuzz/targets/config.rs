//! Fuzzes cordon's config parser: see `cordon::fuzz::config` for the property.

fn main() {
    afl::fuzz!(|data: &[u8]| cordon::fuzz::config(data));
}
