//! Fuzzes cordon's playbook parser: see `cordon_testkit::fuzz::playbook` for the property.

fn main() {
    afl::fuzz!(|data: &[u8]| cordon_testkit::fuzz::playbook(data));
}
