//! Which issuer the next attempt goes to: the Certificate's `issuerRef`, or after a failure on
//! the issuer's side, the next of its `fallbackIssuerRefs`.
//!
//! A failure is on the CA's side when another issuer would likely not meet it: the CA is down
//! or overloaded, refuses this account, lacks a feature, or the issuer itself is not usable (not
//! ready, its account or caBundle is wrong, it has no solver for the name). It is on the user's
//! side when any CA would meet it again: the names, their DNS or HTTP answers, CAA records, the
//! Secret, the Certificate's spec. Only a failure on the CA's side switches issuer.

use super::trigger::{AttemptView, IssuerState};
use crate::{
    api::{IssuerRef, attempt::AttemptPhase},
    issuance::FailureCode,
};
use jiff::Timestamp;

/// Whose side a failure is on (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Another issuer would likely do better: the next attempt goes to it.
    Ca,
    /// Any issuer would fail the same way: the next attempt keeps the issuer.
    User,
}

/// Whose side a failure with `code` is on. A rate limit is the CA's when it outlasts the
/// certificate: without a `Retry-After`, or with one after `needed_by` (the stored certificate's
/// expiry; `None` when there is none to wait with). A shorter one is waited out with the same CA.
pub fn side(code: FailureCode, retry_after: Option<Timestamp>, needed_by: Option<Timestamp>) -> Side {
    use FailureCode as C;
    match code {
        C::RateLimited => match (retry_after, needed_by) {
            (Some(at), Some(needed_by)) if at <= needed_by => Side::User,
            _ => Side::Ca,
        },
        // The CA is down, overloaded or misbehaving.
        C::ServerInternal
        | C::CaUnreachable
        | C::CaNameUnresolved
        | C::Timeout
        | C::BadNonce
        | C::OrderNotReady
        | C::AcmeError
        | C::Malformed
        | C::ReplacesNotReflected
        | C::VerificationFailed
        | C::SigningFailed => Side::Ca,
        // The CA refuses the account, or cannot do what another CA may.
        C::AccountDoesNotExist
        | C::UserActionRequired
        | C::ExternalAccountRequired
        | C::InvalidContact
        | C::UnsupportedContact
        | C::BadSignatureAlgorithm
        | C::UnsupportedIdentifier
        | C::Unsupported
        | C::DnsPersistUnsupported => Side::Ca,
        // The issuer itself is not usable: its CA, account, caBundle or solvers.
        C::CaTlsUntrusted
        | C::InvalidCaBundle
        | C::InvalidAccountKey
        | C::ExternalAccountKeyMissing
        | C::InvalidExternalAccountKey
        | C::IssuerNotFound
        | C::IssuerNotReady
        | C::NotSupported
        | C::NoSolver => Side::Ca,
        // The CA could not validate the names: their DNS, HTTP or TLS answers, CAA records, or
        // a name it refuses by policy. Another CA would check the same.
        C::Unauthorized
        | C::Dns
        | C::Connection
        | C::Tls
        | C::IncorrectResponse
        | C::Caa
        | C::RejectedIdentifier
        | C::Compound
        | C::OrderInvalid
        | C::AlreadyReplaced
        | C::BadCsr
        | C::BadPublicKey
        | C::BadRevocationReason
        | C::InvalidProfile => Side::User,
        // Revocation: about one certificate at the CA that issued it; no other CA can help.
        C::AlreadyRevoked | C::CertificateUnknown | C::NothingToRevoke | C::RevocationNotPossible => Side::User,
        // The user's DNS and its provider.
        C::SolverFailed
        | C::DnsUpdateFailed
        | C::DnsUpdateRefused
        | C::DnsPropagation
        | C::TsigKeyMissing
        | C::TsigKeyInvalid
        | C::DnsAnswerNotSigned
        | C::DnsProviderCredentials
        | C::DnsProviderUnreachable
        | C::DnsPersistRecord => Side::User,
        // The Certificate, its Secret, the cluster, certpilot itself.
        C::InvalidSpec
        | C::SecretNotOwned
        | C::SecretTypeMismatch
        | C::KeystorePasswordMissing
        | C::ApiServerRefused
        | C::KeyGenerationFailed
        | C::KeyEncodingFailed
        | C::SealedKeyUnusable
        | C::Internal => Side::User,
    }
}

/// The issuer of the next attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub issuer: IssuerRef,
    /// Its state, as the Certificate controller found it.
    pub state: IssuerState,
    /// Why it is not `issuerRef`; `None` when it is.
    pub fallback_reason: Option<String>,
    /// The last attempt failed on its issuer's side and this is the next issuer: it goes at
    /// once, without the backoff (which applies once the list is exhausted).
    pub switched: bool,
}

/// The attempts of the current renewal cycle, oldest first: those since the last success, of
/// the Certificate's generation `generation` (a spec change starts a new cycle).
pub fn cycle(attempts: &[AttemptView], generation: i64) -> Vec<&AttemptView> {
    let mut cycle: Vec<&AttemptView> = attempts
        .iter()
        .rev()
        // A Revoke attempt obtains nothing: it neither ends a cycle nor hands one over.
        .filter(|a| a.type_ != crate::api::attempt::AttemptType::Revoke)
        .take_while(|a| a.phase != AttemptPhase::Succeeded && a.generation == generation)
        .collect();
    cycle.reverse();
    cycle
}

/// The issuer the next attempt goes to. `listed`: `issuerRef` then `fallbackIssuerRefs`, each
/// with its state; `cycle`: the attempts of this renewal cycle; `needed_by`: see [`side`].
///
/// After a failure on the CA's side with issuer `i`, the next attempt goes to `i + 1`; after
/// the last, back to `issuerRef` (with the backoff). A failure on the user's side keeps the
/// issuer. An issuer found not ready is passed over while another follows it; one not checked
/// yet or not found (perhaps created a moment after the Certificate) is waited for.
pub fn next_issuer(
    listed: &[(IssuerRef, IssuerState)],
    cycle: &[&AttemptView],
    needed_by: Option<Timestamp>,
) -> Choice {
    let (mut position, mut fallback_reason, mut switched) = (0, None, false);
    let last_failure = cycle.iter().rev().find(|a| a.phase == AttemptPhase::Failed);
    if let Some(failed) = last_failure
        && let Some(at) = listed.iter().position(|(issuer, _)| issuer == &failed.issuer)
    {
        let code = failed.error_code.as_deref().and_then(FailureCode::parse);
        match code.map(|code| (code, side(code, failed.retry_after, needed_by))) {
            Some((code, Side::Ca)) if at + 1 < listed.len() => {
                position = at + 1;
                switched = true;
                let message = failed.error_message.as_deref().unwrap_or("no message");
                fallback_reason = Some(format!("{} failed on the CA's side ({code}): {message}", failed.issuer));
            }
            Some((_, Side::Ca)) => {}
            _ => {
                position = at;
                fallback_reason = failed.fallback_reason.clone().filter(|_| at > 0);
            }
        }
    }
    while position + 1 < listed.len()
        && let (issuer, IssuerState::NotReady(why)) = &listed[position]
    {
        fallback_reason = Some(format!("{issuer} cannot be used: {why}"));
        position += 1;
    }
    let (issuer, state) = listed[position].clone();
    Choice { issuer, state, fallback_reason, switched }
}

/// Whether an attempt of `issuer` that meets a passing failure on the CA's side should end at
/// once rather than wait for the CA within the attempt: another issuer follows it in `listed`
/// (`issuerRef` then `fallbackIssuerRefs`), and the next attempt goes there without delay.
pub fn hand_over(listed: &[IssuerRef], issuer: &IssuerRef, code: FailureCode) -> bool {
    let follows = listed.iter().position(|listed| listed == issuer).is_some_and(|at| at + 1 < listed.len());
    follows && side(code, None, None) == Side::Ca
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::IssuerKind, policy::trigger::tests::attempt};
    use jiff::SignedDuration;

    fn issuer(name: &str) -> IssuerRef {
        IssuerRef { kind: IssuerKind::ClusterIssuer, name: name.into() }
    }

    fn listed(names: &[&str]) -> Vec<(IssuerRef, IssuerState)> {
        names.iter().map(|name| (issuer(name), IssuerState::Ready)).collect()
    }

    fn failed(index: u32, by: &str, code: FailureCode) -> AttemptView {
        AttemptView {
            issuer: issuer(by),
            error_code: Some(code.as_str().into()),
            error_message: Some(format!("{code} from {by}")),
            ..attempt(index, AttemptPhase::Failed)
        }
    }

    fn choose(attempts: &[AttemptView]) -> Choice {
        next_issuer(&listed(&["le", "zerossl", "buypass"]), &cycle(attempts, 1), None)
    }

    #[test]
    fn every_failure_code_is_on_one_side() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let user =
            [FailureCode::Dns, FailureCode::Caa, FailureCode::RejectedIdentifier, FailureCode::IncorrectResponse];
        let ca = [FailureCode::CaUnreachable, FailureCode::ServerInternal, FailureCode::IssuerNotReady];
        for code in FailureCode::ALL {
            let side = side(*code, None, Some(now));
            assert_eq!(FailureCode::parse(code.as_str()), Some(*code));
            if user.contains(code) {
                assert_eq!(side, Side::User, "{code}");
            }
            if ca.contains(code) {
                assert_eq!(side, Side::Ca, "{code}");
            }
        }
        let sides: Vec<Side> = FailureCode::ALL.iter().map(|c| side(*c, None, None)).collect();
        assert!(sides.contains(&Side::Ca) && sides.contains(&Side::User));
    }

    #[test]
    fn an_attempt_hands_over_only_when_another_issuer_follows() {
        let listed = [issuer("le"), issuer("zerossl")];
        assert!(hand_over(&listed, &issuer("le"), FailureCode::CaUnreachable));
        assert!(!hand_over(&listed, &issuer("zerossl"), FailureCode::CaUnreachable), "the last waits for its CA");
        assert!(!hand_over(&listed, &issuer("le"), FailureCode::DnsProviderUnreachable), "the user's DNS API");
        assert!(!hand_over(&listed[..1], &issuer("le"), FailureCode::ServerInternal), "no fallback");
    }

    #[test]
    fn a_rate_limit_switches_only_when_it_outlasts_the_certificate() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let expires = now + SignedDuration::from_hours(24 * 20);
        let soon = Some(now + SignedDuration::from_hours(1));
        let late = Some(expires + SignedDuration::from_hours(1));
        assert_eq!(side(FailureCode::RateLimited, soon, Some(expires)), Side::User);
        assert_eq!(side(FailureCode::RateLimited, late, Some(expires)), Side::Ca);
        assert_eq!(side(FailureCode::RateLimited, None, Some(expires)), Side::Ca, "no end given");
        assert_eq!(side(FailureCode::RateLimited, soon, None), Side::Ca, "no certificate to wait with");
    }

    #[test]
    fn a_new_cycle_starts_with_issuer_ref() {
        let choice = choose(&[]);
        assert_eq!((choice.issuer, choice.fallback_reason, choice.switched), (issuer("le"), None, false));
        let done = [failed(1, "le", FailureCode::CaUnreachable), attempt(2, AttemptPhase::Succeeded)];
        assert_eq!(choose(&done).issuer, issuer("le"), "the renewal after a fallback's success");
    }

    #[test]
    fn a_failure_on_the_cas_side_goes_to_the_next_issuer_at_once() {
        let choice = choose(&[failed(1, "le", FailureCode::CaUnreachable)]);
        assert_eq!(choice.issuer, issuer("zerossl"));
        assert!(choice.switched);
        let reason = choice.fallback_reason.unwrap();
        assert!(reason.contains("ClusterIssuer/le") && reason.contains("CAUnreachable"), "{reason}");
        let twice = [failed(1, "le", FailureCode::ServerInternal), failed(2, "zerossl", FailureCode::RateLimited)];
        assert_eq!(choose(&twice).issuer, issuer("buypass"));
    }

    #[test]
    fn after_the_last_issuer_the_cycle_starts_again_with_the_backoff() {
        let all = [
            failed(1, "le", FailureCode::CaUnreachable),
            failed(2, "zerossl", FailureCode::CaUnreachable),
            failed(3, "buypass", FailureCode::CaUnreachable),
        ];
        let choice = choose(&all);
        assert_eq!((choice.issuer, choice.switched, choice.fallback_reason), (issuer("le"), false, None));
    }

    #[test]
    fn a_failure_on_the_users_side_keeps_the_issuer() {
        let choice = choose(&[failed(1, "le", FailureCode::Dns)]);
        assert_eq!((choice.issuer, choice.switched), (issuer("le"), false));
        let mut on_fallback = failed(2, "zerossl", FailureCode::Caa);
        on_fallback.fallback_reason = Some("le was down".into());
        let choice = choose(&[failed(1, "le", FailureCode::CaUnreachable), on_fallback]);
        assert_eq!(choice.issuer, issuer("zerossl"));
        assert_eq!((choice.switched, choice.fallback_reason.as_deref()), (false, Some("le was down")));
    }

    #[test]
    fn cancelled_attempts_and_unknown_codes_keep_the_issuer() {
        let mut cancelled = attempt(2, AttemptPhase::Cancelled);
        cancelled.issuer = issuer("zerossl");
        let choice = choose(&[failed(1, "le", FailureCode::ServerInternal), cancelled]);
        assert_eq!(choice.issuer, issuer("zerossl"), "the last failure decides");
        let mut unknown = failed(1, "le", FailureCode::ServerInternal);
        unknown.error_code = Some("SomethingNew".into());
        assert_eq!(choose(&[unknown]).issuer, issuer("le"));
    }

    #[test]
    fn a_spec_change_starts_a_new_cycle() {
        let mut old = failed(1, "le", FailureCode::CaUnreachable);
        old.generation = 0;
        assert_eq!(choose(&[old.clone()]).issuer, issuer("le"));
        let removed = failed(1, "gone", FailureCode::CaUnreachable);
        assert_eq!(choose(&[removed]).issuer, issuer("le"), "an issuer no longer listed");
    }

    #[test]
    fn an_issuer_that_is_not_ready_is_passed_over_while_another_follows() {
        let mut states = listed(&["le", "zerossl"]);
        states[0].1 = IssuerState::NotReady("the CA's directory is unreachable".into());
        let choice = next_issuer(&states, &[], None);
        assert_eq!(choice.issuer, issuer("zerossl"));
        assert!(choice.fallback_reason.unwrap().contains("directory is unreachable"));
        states[1].1 = IssuerState::NotReady("its account was refused".into());
        let choice = next_issuer(&states, &[], None);
        assert_eq!((choice.issuer, choice.state), (issuer("zerossl"), states[1].1.clone()), "the last is kept");
        for waited_for in [IssuerState::Unchecked("not checked yet".into()), IssuerState::NotFound("none".into())] {
            states[0].1 = waited_for;
            assert_eq!(next_issuer(&states, &[], None).issuer, issuer("le"), "{:?}", states[0].1);
        }
    }
}
