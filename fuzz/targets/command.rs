//! Fuzzes cordon's command parser: see `cordon::fuzz::command` for the property.

fn main() {
    afl::fuzz!(|data: &[u8]| cordon::fuzz::command(data));
}
