//! Fuzzes cordon's playbook parser: see `cordon::fuzz::playbook` for the property.

fn main() {
    afl::fuzz!(|data: &[u8]| cordon::fuzz::playbook(data));
}
