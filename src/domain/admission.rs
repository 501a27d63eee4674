//! Who is let into an incident's rooms at provisioning: the verification policy as one
//! pure decision per role holder and room, taken before any invite goes out and
//! recorded in the roster (the guard's ground truth).

use crate::input::playbook::Verification;

/// What is known of one role holder's seat in one room when provisioning decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Let in on an earlier, interrupted attempt: whether unverified then. Someone
    /// already let in stays in, as they were.
    pub admitted_before: Option<bool>,
    /// Why their account cannot be invited at all (missing, deactivated), if so.
    pub uninvitable: Option<String>,
    /// Why their identity is not verified now; `None` when it is.
    pub unverified_because: Option<String>,
}

/// The seat a holder gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seat {
    /// Invited now.
    Invited,
    /// Listed as pending, for this reason, until an enrolment or `admit` lets them in.
    Pending(String),
}

/// The decision for one holder: the seat, and whether cordon could not verify them
/// (said in the invite's reason and kept in the roster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Their seat.
    pub seat: Seat,
    /// Unverified: let in on the playbook's `warn`, or pending for it.
    pub unverified: bool,
}

/// Decides one holder's seat under the playbook's verification policy.
///
/// An account that cannot be invited is pending for that reason whatever its keys say;
/// someone let in before stays in; a verified holder is invited; an unverified one is
/// pending under `required` and invited with a warning under `warn`.
pub fn admit(holder: &Holder, policy: Verification) -> Admission {
    let unverified = holder
        .admitted_before
        .unwrap_or(holder.unverified_because.is_some());
    let seat = if let Some(why) = &holder.uninvitable {
        Seat::Pending(why.clone())
    } else if holder.admitted_before.is_some() {
        Seat::Invited
    } else {
        match (&holder.unverified_because, policy) {
            (None, _) | (Some(_), Verification::Warn) => Seat::Invited,
            (Some(why), Verification::Required) => Seat::Pending(why.clone()),
        }
    };
    Admission { seat, unverified }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(before: Option<bool>, uninvitable: Option<&str>, why: Option<&str>) -> Holder {
        Holder {
            admitted_before: before,
            uninvitable: uninvitable.map(str::to_owned),
            unverified_because: why.map(str::to_owned),
        }
    }

    #[test]
    fn a_verified_holder_is_invited_under_either_policy() {
        for policy in [Verification::Required, Verification::Warn] {
            assert_eq!(
                admit(&holder(None, None, None), policy),
                Admission {
                    seat: Seat::Invited,
                    unverified: false
                }
            );
        }
    }

    #[test]
    fn an_unverified_holder_waits_under_required_and_is_warned_about_under_warn() {
        let h = holder(None, None, Some("no cross-signing identity"));
        assert_eq!(
            admit(&h, Verification::Required),
            Admission {
                seat: Seat::Pending("no cross-signing identity".into()),
                unverified: true
            }
        );
        assert_eq!(
            admit(&h, Verification::Warn),
            Admission {
                seat: Seat::Invited,
                unverified: true
            }
        );
    }

    #[test]
    fn a_missing_account_is_pending_whatever_its_keys_say() {
        let h = holder(
            None,
            Some("the account does not exist on the homeserver"),
            None,
        );
        for policy in [Verification::Required, Verification::Warn] {
            assert_eq!(
                admit(&h, policy).seat,
                Seat::Pending("the account does not exist on the homeserver".into())
            );
        }
    }

    #[test]
    fn someone_let_in_before_stays_in_as_they_were() {
        // Enrolled or not since, a resumed attempt does not pull them out again.
        let h = holder(Some(true), None, None);
        assert_eq!(
            admit(&h, Verification::Required),
            Admission {
                seat: Seat::Invited,
                unverified: true
            }
        );
        let h = holder(Some(false), None, Some("identity changed"));
        assert_eq!(
            admit(&h, Verification::Required),
            Admission {
                seat: Seat::Invited,
                unverified: false
            }
        );
    }
}
