//! Fuzzes cordon's command parser: see `cordon_testkit::fuzz::command` for the property.

fn main() {
    afl::fuzz!(|data: &[u8]| cordon_testkit::fuzz::command(data));
}
