//! The attempt's phase machine. `drive` runs one pass: it matches on the phase, calls that
//! phase's function, and applies the typed transition it returns, until the attempt must wait
//! (status written, look again later) or ends. What happens in a phase is in its function:
//!
//! Pending → Keying → Ordering → Presenting → Validating → Finalizing → Storing → Succeeded
//! (local issuers go Keying → Finalizing), or Failed at any step.
//!
//! A Revoke attempt goes Pending → Revoking → Succeeded (or Failed): it revokes the serial it
//! names at the issuer that issued it and obtains nothing. The new certificate with a new key
//! is another attempt, a Reissue the Certificate controller makes once the Revoke attempt
//! succeeded (`policy::trigger`), unless the request said `no-reissue`.
//!
//! Write-ahead: before a side effect that must not be repeated (a CSR for a key, a validation
//! at the CA), what is needed to resume is persisted, and nothing else is. An ACME issuance
//! writes its status twice: the order's URL with the new key sealed into it (`key.rs`) and the
//! challenges' records and answers, before the CA is told anything (every replica's solver
//! answers from them; no CSR is sent for a key not written); and the end. An order placed by a
//! pass that stopped before that write is found again in the account's list of orders, by
//! every pass but the first of an attempt this process made (`context::Unordered`). What the
//! CA does meanwhile (validation, issuance) is asked of it again by a restarted pass. A pass
//! that crashes resumes from the last persisted phase.
//!
//! What the phases use lives beside them: the issuer and the CA (`ca.rs`), the challenges and
//! their records (`challenges.rs`), the attempt's key (`key.rs`) and the target Secret
//! (`target.rs`).

mod ca;
mod challenges;
mod crl;
mod key;
mod revoke;
mod target;

use super::{cleanup, finish_status};
use crate::{
    api::{
        CertificateAttempt, IssuerKind,
        attempt::{AttemptPhase, AttemptType, CertificateAttemptStatus},
    },
    controller::{apply_status, context::Context},
    error::{Error, Result},
    issuance::{
        Failure, FailureCode as C, Obtained, Stop,
        acme::{account::AccountSource, order},
        failure::is_refusal,
        local,
        signer::Signer,
        steps::StepLog,
    },
    pki::PrivateKey,
    policy::fallback,
    solver::ChallengeKind,
};
use instant_acme::OrderStatus as CaOrder;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, reflector::ObjectRef},
};
use std::{sync::Arc, time::Duration};
use target::Stored;

pub(super) use key::GENERATE_KEY_STEP;
pub(super) const PLACE_ORDER_STEP: &str = "PlaceOrder";

/// Most phases one pass goes through (a guard: each phase moves forward or waits).
const MAX_STEPS_PER_PASS: usize = 12;

/// What a phase function decided.
pub enum Transition {
    /// Go on to the next phase in this pass.
    Next(AttemptPhase),
    /// Write the status first (write-ahead), then go on to the next phase in this pass.
    Persist(AttemptPhase),
    /// Write the status and look again after this long.
    Wait(Duration),
    /// Look again after this long, writing nothing: what the pass learnt is the CA's progress,
    /// which the next pass asks for again (no restart needs it).
    Poll(Duration),
    /// The attempt ends without a certificate.
    Fail(Failure),
    /// The Secret holds the new certificate.
    Succeed,
}

/// Why a phase stopped before deciding where to go: the attempt fails, it must wait, writing
/// nothing (for an order slot, say), or the API server could not be asked (the pass is tried
/// again).
enum Halt {
    Fail(Failure),
    Poll(Duration),
    Api(Error),
}

/// What a phase, or a step within one, comes to.
type Phase<T> = std::result::Result<T, Halt>;

impl From<Stop> for Halt {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Failed(failure) => Halt::Fail(failure),
            Stop::Api(error) => Halt::Api(error),
        }
    }
}

impl From<Failure> for Halt {
    fn from(failure: Failure) -> Self {
        Halt::Fail(failure)
    }
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Halt::Api(error)
    }
}

impl From<kube::Error> for Halt {
    fn from(error: kube::Error) -> Self {
        Halt::Api(error.into())
    }
}

/// Everything one pass works with; what is not in `status` lives only for the pass.
struct Pass<'a> {
    ctx: &'a Context,
    attempt: &'a CertificateAttempt,
    namespace: String,
    status: CertificateAttemptStatus,
    log: StepLog,
    signer: Option<Signer>,
    account: Option<Arc<crate::issuance::acme::account::AcmeAccount>>,
    order: Option<instant_acme::Order>,
    key: Option<PrivateKey>,
    obtained: Option<Obtained>,
    reregistered: bool,
    /// The stored status holds the order's URL and the attempt's sealed key.
    order_recorded: bool,
    /// This pass opened the key sealed into the status (see `step`).
    sealed_key_opens: bool,
}

/// Runs the attempt until it waits or ends.
pub async fn drive(ctx: &Context, api: &Api<CertificateAttempt>, attempt: &CertificateAttempt) -> Result<Action> {
    let mut status = attempt.status.clone().unwrap_or_default();
    let log = StepLog::from(std::mem::take(&mut status.steps));
    let namespace = attempt.namespace().unwrap_or_default();
    let mut pass = Pass {
        ctx,
        attempt,
        namespace,
        status,
        log,
        signer: None,
        account: None,
        order: None,
        key: None,
        obtained: None,
        reregistered: false,
        order_recorded: attempt.status.as_ref().is_some_and(|s| s.order.is_some()),
        sealed_key_opens: false,
    };
    let before = attempt.status.clone().unwrap_or_default();
    for _ in 0..MAX_STEPS_PER_PASS {
        let transition = settle(pass.step().await)?;
        match pass.recover(transition).await? {
            Transition::Next(phase) => pass.status.phase = phase,
            Transition::Persist(phase) => {
                pass.status.phase = phase;
                pass.save(api).await?;
            }
            Transition::Wait(after) => {
                let saved = pass.snapshot();
                if saved != before {
                    apply_status(ctx, api, &attempt.name_any(), &saved).await?;
                }
                return Ok(Action::requeue(after));
            }
            Transition::Poll(after) => return Ok(Action::requeue(after)),
            Transition::Fail(failure) => return pass.end(api, Some(failure)).await,
            Transition::Succeed => return pass.end(api, None).await,
        }
    }
    pass.save(api).await?;
    Ok(Action::requeue(Duration::ZERO))
}

/// The transition a phase's outcome comes to. A write the API server refuses for good (the
/// object is invalid, or a policy forbids it) fails the attempt, saying so; any other API
/// error is the pass's, tried again.
fn settle(outcome: Phase<Transition>) -> Result<Transition> {
    match outcome {
        Ok(transition) => Ok(transition),
        Err(Halt::Fail(failure)) => Ok(Transition::Fail(failure)),
        Err(Halt::Poll(after)) => Ok(Transition::Poll(after)),
        Err(Halt::Api(Error::Kube(error))) => match is_refusal(&error) {
            Some(refusal) => Ok(Transition::Fail(Failure::refused("a write of the attempt", refusal))),
            None => Err(Error::Kube(error)),
        },
        Err(Halt::Api(error)) => Err(error),
    }
}

impl Pass<'_> {
    /// The phase machine: one function per phase. A key sealed into the status must open first:
    /// one that does not (the sealing key was replaced since) could never finish the order, so
    /// the attempt ends at once, not after the CA has validated every name.
    async fn step(&mut self) -> Phase<Transition> {
        if !self.sealed_key_opens && self.status.sealed_key.is_some() {
            self.unsealed_key().await?;
            self.sealed_key_opens = true;
        }
        match self.status.phase {
            AttemptPhase::Pending => Ok(self.pending()),
            AttemptPhase::Keying => self.keying().await,
            AttemptPhase::Ordering => self.ordering().await,
            AttemptPhase::Presenting => self.presenting().await,
            AttemptPhase::Validating => self.validating().await,
            AttemptPhase::Finalizing => self.finalizing().await,
            AttemptPhase::Storing => self.storing().await,
            AttemptPhase::Revoking => self.revoking().await,
            // Ended attempts are settled by the reconciler before any pass begins.
            AttemptPhase::Succeeded | AttemptPhase::Failed | AttemptPhase::Cancelled | AttemptPhase::Rejected => {
                Ok(Transition::Wait(Duration::from_secs(3600)))
            }
        }
    }

    /// Pending: note the start (kept across restarts) and get a key, or revoke.
    fn pending(&mut self) -> Transition {
        self.status.started_at.get_or_insert_with(|| Time(Timestamp::now()));
        match self.attempt.spec.type_ {
            AttemptType::Revoke => Transition::Next(AttemptPhase::Revoking),
            _ => Transition::Next(AttemptPhase::Keying),
        }
    }

    /// Keying: the key for this attempt. ACME keys are sealed into the status, written with the
    /// intent to order, before the CA sees a CSR; a local signature needs no such care (nothing
    /// leaves).
    async fn keying(&mut self) -> Phase<Transition> {
        let signer = self.signer().await?;
        let acme = matches!(signer, Signer::Acme(_));
        if acme {
            // An order slot first: an attempt waiting for one has made no key yet, and writes
            // nothing while it waits.
            self.acme_guard()?;
        }
        self.log.begin(GENERATE_KEY_STEP);
        let (key, how) = self.key_for(acme).await?;
        self.log.succeed(how);
        self.key = Some(key);
        self.signer = Some(signer);
        // Nothing to write yet: the sealed key is written with the order's URL (a restart before
        // that makes a new key, which no one has seen).
        Ok(Transition::Next(if acme { AttemptPhase::Ordering } else { AttemptPhase::Finalizing }))
    }

    /// Ordering: place the order within the issuer's limit of orders in flight. Its URL is
    /// written with the challenges' records, before the CA is told anything. An attempt this
    /// process did not just make may have placed its order in a pass that stopped before that
    /// write: it takes that order up from the account's list of orders (RFC 8555 §7.1.2.1)
    /// instead of placing another. A CA without that list gets asked again (Let's Encrypt
    /// answers a repeated request with the same pending order).
    async fn ordering(&mut self) -> Phase<Transition> {
        self.acme_guard()?;
        let issuer = self.acme_issuer().await?;
        let account = self.account(&issuer).await?;
        self.log.begin(PLACE_ORDER_STEP);
        let first_pass = self.attempt.uid().is_some_and(|uid| self.ctx.unordered.take(&uid));
        let taken = self.orders_of_other_attempts();
        let found = if first_pass {
            None
        } else {
            order::find_placed(&account, &self.attempt.spec, |url| taken.contains(url)).await
        };
        if let Some(placed) = found {
            self.log.succeed(format!("found order {} placed by a pass that stopped before recording it", placed.url));
            self.status.order = Some(placed);
            return Ok(Transition::Next(AttemptPhase::Presenting));
        }
        let issuer_key = self.issuer_key();
        let sends_replaces = self.ctx.sends_replaces(&issuer_key);
        let placed =
            order::place(&account, &self.attempt.spec, &issuer, sends_replaces).await.inspect_err(|failure| {
                if failure.code == C::ReplacesNotReflected {
                    self.ctx.forget_replaces(&issuer_key);
                }
            })?;
        self.log.succeed(format!("placed order {}", placed.url));
        self.status.order = Some(placed);
        // Its URL is written with the challenges' records: a pass stopped before that finds
        // the order in the account's list, as above.
        Ok(Transition::Next(AttemptPhase::Presenting))
    }

    /// Presenting: publish each pending challenge's record once, and write the records with
    /// their answers (and the order's URL) before the CA is told to check them: every replica's
    /// solver answers from the status. DNS-01 records are written before they are published
    /// too (cleanup must find whatever a pass stopped midway published) and looked up on later
    /// passes until they can be seen; a host's HTTP-01 route outlives the attempt
    /// (`controller::routes`), and TLS-ALPN-01 and DNS-PERSIST-01 publish nothing certpilot
    /// removes. The CA is told in Validating, which also tells it what a pass stopped before
    /// telling left pending.
    async fn presenting(&mut self) -> Phase<Transition> {
        let (issuer, account, mut order) = self.open_order().await?;
        if order.state().status != CaOrder::Pending {
            self.order = Some(order);
            return Ok(Transition::Next(AttemptPhase::Validating));
        }
        if !self.log.steps.iter().any(|s| s.name == "Present") {
            self.log.begin("Present");
        }
        let mut challenges = order::challenges(&account, &mut order, &issuer.solvers).await?;
        let persist_issuers = self.persist_values(&issuer, &account, &mut challenges).await?;
        let first = self.status.challenges.is_empty();
        let publishes_dns = challenges.iter().any(|c| c.pending && c.kind == ChallengeKind::Dns01);
        if publishes_dns {
            // Made for an issuer without dns01 solvers then (or a local one): its records must
            // be removed however it ends, so it holds certpilot's finalizer from here on.
            super::hold(&self.ctx.namespaced(&self.namespace), self.attempt).await?;
        }
        if self.note_answers(&challenges) && (publishes_dns || !first) {
            // Write-ahead: DNS-01 records are known before any is published; answers an older
            // certpilot kept in memory are written before anything else happens.
            self.order = Some(order);
            return Ok(Transition::Persist(AttemptPhase::Presenting));
        }
        let mut published = 0;
        let mut waiting = Vec::new();
        for challenge in challenges {
            let mut record = self.known_record(&challenge);
            if challenge.pending {
                if record.presented_at.is_none() {
                    self.delegate(&challenge, &mut record).await?;
                    self.present(&challenge, &record).await?;
                    record.presented_at = Some(Time(Timestamp::now()));
                }
                if challenge.kind == ChallengeKind::DnsPersist01 {
                    let checked = self.persist_check(&challenge, &mut record, &persist_issuers, account.uri()).await;
                    // A refusal ends the attempt before the CA was told anything: no failed
                    // validation at the CA, and the record says what is wrong.
                    self.upsert_record(record.clone());
                    checked?;
                }
                if self.visible(&challenge, &mut record).await {
                    published += 1;
                } else {
                    waiting.push(record.dns_name.clone());
                }
            }
            self.upsert_record(record);
        }
        if !waiting.is_empty() {
            return Ok(Transition::Wait(Duration::from_secs(2)));
        }
        self.log.succeed(format!("published {published} validation record(s); the CA is told to check them"));
        self.log.begin("Validate");
        self.order = Some(order);
        // Written even after DNS-01's write-ahead: passes that only poll the CA write
        // nothing, and start from the phase stored.
        Ok(Transition::Persist(AttemptPhase::Validating))
    }

    /// Tells the CA to check the challenges it still shows pending: all of them right after
    /// Presenting, none later unless a pass stopped between writing the records and telling.
    async fn tell_pending(
        &mut self,
        issuer: &crate::api::issuer::AcmeIssuer,
        account: &crate::issuance::acme::account::AcmeAccount,
        order: &mut instant_acme::Order,
    ) -> Phase<()> {
        let challenges = order::challenges(account, order, &issuer.solvers).await?;
        if self.answers_missing() {
            self.note_answers(&challenges);
        }
        let pending: Vec<(String, ChallengeKind)> =
            challenges.iter().filter(|c| c.pending).map(|c| (c.record.dns_name.clone(), c.kind)).collect();
        if !pending.is_empty() {
            order::tell_ready(account, order, &pending).await?;
        }
        Ok(())
    }

    /// Validating: the CA checks the records; follow its verdict per name.
    async fn validating(&mut self) -> Phase<Transition> {
        let (issuer, account, mut order) = self.open_order().await?;
        self.status.order = Some(order::order_status(&mut order));
        match order.state().status {
            CaOrder::Pending => {
                self.tell_pending(&issuer, &account, &mut order).await?;
                order::challenge_states(&account, &mut order, &mut self.status.challenges).await?;
                Ok(Transition::Poll(self.poll_interval()))
            }
            CaOrder::Invalid => Err(order::invalid_order(&mut order, &mut self.status).await.into()),
            CaOrder::Ready | CaOrder::Processing | CaOrder::Valid => {
                for record in &mut self.status.challenges {
                    record.status = "valid".into();
                }
                if self.log.steps.iter().any(|s| s.name == "Validate" && s.finished_at.is_none()) {
                    self.log.succeed("every name was validated");
                }
                self.order = Some(order);
                Ok(Transition::Next(AttemptPhase::Finalizing))
            }
        }
    }

    /// Finalizing: sign locally, or send the CSR and download the chain; either way the result
    /// is verified against the key and the names before it may be stored.
    async fn finalizing(&mut self) -> Phase<Transition> {
        let signer = self.signer().await?;
        if !matches!(signer, Signer::Acme(_)) {
            let Some(key) = self.key.take() else { return Ok(Transition::Next(AttemptPhase::Keying)) };
            self.obtained = Some(local::sign(&self.attempt.spec, &signer, key, &mut self.log)?);
            return Ok(Transition::Next(AttemptPhase::Storing));
        }
        self.signer = Some(signer);
        self.acme_guard()?;
        let issuer = self.acme_issuer().await?;
        let account = self.account(&issuer).await?;
        let key = self.attempt_key().await?;
        let mut order = self.order(&account).await?;
        self.status.order = Some(order::order_status(&mut order));
        match order.state().status {
            // No CSR for a key the stored status does not hold (a CA that had every name
            // validated already, say, skipped Presenting's write).
            CaOrder::Ready if !self.order_recorded => Ok(Transition::Persist(AttemptPhase::Finalizing)),
            CaOrder::Ready => {
                self.log.begin("Finalize");
                order::finalize(&account, &mut order, &self.attempt.spec, &key).await?;
                self.log.succeed("sent the CSR");
                // Most CAs issue within moments: waited for here, the steps so far ride along
                // in the attempt's last status write. A CA still at it after that gets the
                // steps written (a restarted pass asks it again either way).
                order::await_issued(&account, &mut order).await?;
                if order.state().status == CaOrder::Processing {
                    return Ok(Transition::Wait(Duration::from_secs(1)));
                }
                self.order = Some(order);
                Ok(Transition::Next(AttemptPhase::Finalizing))
            }
            CaOrder::Pending | CaOrder::Processing => Ok(Transition::Poll(Duration::from_secs(1))),
            CaOrder::Invalid => Err(order::invalid_order(&mut order, &mut self.status).await.into()),
            CaOrder::Valid => {
                self.log.begin("Download");
                let downloaded = order::download(&account, &mut order, &issuer, &self.attempt.spec, &key).await?;
                let Some(downloaded) = downloaded else { return Ok(Transition::Wait(Duration::from_secs(1))) };
                self.log.succeed(downloaded.chain_note);
                self.log.begin("Verify");
                self.log.succeed(format!(
                    "the certificate matches the key and names; valid until {}",
                    downloaded.obtained.info.not_after
                ));
                self.obtained = Some(downloaded.obtained);
                Ok(Transition::Next(AttemptPhase::Storing))
            }
        }
    }

    /// Storing: write the verified certificate to the target Secret in one server-side apply,
    /// after checking again that certpilot may write it.
    async fn storing(&mut self) -> Phase<Transition> {
        let Some(obtained) = self.obtained.take() else {
            // Nothing in hand (a pass never stores across restarts): obtain it again.
            return Ok(Transition::Next(AttemptPhase::Finalizing));
        };
        self.log.begin("WriteSecret");
        let name = &self.attempt.spec.secret_name;
        let (note, obtained) = match self.write_target(&obtained).await? {
            Stored::Written => (format!("wrote Secret {name}"), obtained),
            Stored::TakenOver => (format!("took over Secret {name} from cert-manager and wrote it"), obtained),
            Stored::Already(info) => (
                format!(
                    "Secret {name} already holds this attempt's certificate (its status was not recorded before a restart)"
                ),
                Obtained { info: *info, ..obtained },
            ),
        };
        self.log.succeed(note);
        self.obtained = Some(obtained);
        Ok(Transition::Succeed)
    }

    /// Handles what a phase may recover from: the CA forgot the account (register again, place
    /// a new order), or a transient hiccup while an order is under way (try again shortly).
    async fn recover(&mut self, transition: Transition) -> Result<Transition> {
        let Transition::Fail(failure) = transition else { return Ok(transition) };
        let ordering = matches!(
            self.status.phase,
            AttemptPhase::Ordering | AttemptPhase::Presenting | AttemptPhase::Validating | AttemptPhase::Finalizing
        );
        let revoking = self.status.phase == AttemptPhase::Revoking;
        if failure.code == C::AccountDoesNotExist && (ordering || revoking) && !self.reregistered {
            return settle(self.reregister(failure).await);
        }
        // A revocation is the issuing CA's to make: it is never handed over to a fallback.
        let tried_here = revoking || (ordering && !self.hands_over(&failure));
        if failure.code.is_transient() && tried_here && !self.timed_out() {
            tracing::warn!(attempt = %self.attempt.name_any(), error = %failure.message, "transient ACME failure; trying again");
            let wait = if failure.code == C::BadNonce { Duration::from_millis(500) } else { Duration::from_secs(10) };
            return Ok(Transition::Wait(wait));
        }
        Ok(Transition::Fail(failure))
    }

    /// A fallback issuer follows this attempt's: the failure ends the attempt, and the next
    /// one goes to the fallback at once instead of this one waiting for its CA.
    fn hands_over(&self, failure: &Failure) -> bool {
        let spec = &self.attempt.spec;
        let certificate =
            self.ctx.caches.certificates.get(&ObjectRef::new(&spec.certificate_name).within(&self.namespace));
        certificate.is_some_and(|c| fallback::hand_over(&c.spec.issuers(), &spec.issuer_ref, failure.code))
    }

    async fn reregister(&mut self, failure: Failure) -> Phase<Transition> {
        self.reregistered = true;
        let issuer = self.acme_issuer().await?;
        let Some(stale) = self.account.take() else { return Ok(Transition::Fail(failure)) };
        let secrets = self.issuer_secrets();
        let key = self.issuer_key();
        let source = AccountSource {
            key: &key,
            issuer_name: &self.attempt.spec.issuer_ref.name,
            spec: &issuer,
            secrets: &secrets,
        };
        let account = self.ctx.accounts.reregister(&source, &stale).await?;
        let revoking = self.status.phase == AttemptPhase::Revoking;
        let next = if revoking { "the revocation is asked again" } else { "a new order follows" };
        self.log.begin("RegisterAccount");
        self.log.succeed(format!(
            "the CA no longer knew account {}; registered again as {}; {next}",
            stale.uri(),
            account.uri()
        ));
        self.account = Some(account);
        if revoking {
            return Ok(Transition::Next(AttemptPhase::Revoking));
        }
        self.order = None;
        self.status.order = None;
        self.status.challenges.clear();
        Ok(Transition::Persist(AttemptPhase::Ordering))
    }

    /// Ends the attempt: status first, then cleanup, then the finalizer; an Event and a metric.
    /// A step still running when the attempt fails is the one that failed.
    async fn end(mut self, api: &Api<CertificateAttempt>, failure: Option<Failure>) -> Result<Action> {
        if let Some(failure) = &failure {
            self.log.fail(failure.message.clone());
        }
        let mut status = self.snapshot();
        finish_status(&mut status, failure.as_ref());
        if let Some(obtained) = &self.obtained {
            status.issued = Some(crate::api::attempt::IssuedCertificate {
                serial_number: obtained.info.serial_hex.clone(),
                not_before: Time(obtained.info.not_before),
                not_after: Time(obtained.info.not_after),
                fingerprint_sha256: obtained.info.fingerprint_sha256.clone(),
            });
        }
        let name = self.attempt.name_any();
        apply_status(self.ctx, api, &name, &status).await?;
        self.status = status.clone();
        let mut ended = self.attempt.clone();
        ended.status = Some(status);
        cleanup::run(self.ctx, &ended).await?;
        super::release(api, &ended).await?;
        self.announce(failure.as_ref()).await;
        let kind = match self.attempt.spec.issuer_ref.kind {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        };
        self.ctx.metrics.attempt_finished(kind, if failure.is_none() { "succeeded" } else { "failed" });
        if let Some(revoked) = &self.status.revoked {
            self.ctx.metrics.revoked(kind, &revoked.reason);
        }
        if let Some(failure) = &failure {
            self.ctx.metrics.attempt_failed(kind, failure.code.as_str());
        }
        Ok(Action::await_change())
    }

    /// The one Event on the Certificate an attempt makes: its outcome, and why it was made
    /// (the status of the Certificate and of the attempt show it while it is under way).
    async fn announce(&self, failure: Option<&Failure>) {
        let Some(certificate) = self.certificate_ref() else { return };
        let spec = &self.attempt.spec;
        let name = format!("{} ({:?}: {})", self.attempt.name_any(), spec.type_, spec.reason);
        match (failure, &self.obtained) {
            (None, Some(obtained)) => {
                let note = format!(
                    "attempt {name} wrote Secret {}: serial {}, valid until {}",
                    spec.secret_name, obtained.info.serial_hex, obtained.info.not_after
                );
                self.ctx.event(&certificate, false, "Issued", "Issue", note).await;
            }
            (Some(failure), _) => {
                let note = format!("attempt {name} failed ({}): {}", failure.code, failure.message);
                self.ctx.event(&certificate, true, "AttemptFailed", "Issue", note).await;
            }
            (None, None) => {
                let Some(revoked) = &self.status.revoked else { return };
                let how = if revoked.already_revoked { "found already revoked" } else { "revoked" };
                let note = format!(
                    "attempt {name} {how} certificate {} ({}) at {}",
                    revoked.serial_number, revoked.reason, self.attempt.spec.issuer_ref
                );
                self.ctx.event(&certificate, false, "Revoked", "Revoke", note).await;
            }
        }
    }

    /// The Certificate this attempt is for, as Events name it.
    fn certificate_ref(&self) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
        let owner = self.attempt.owner_references().iter().find(|o| o.kind == "Certificate")?;
        Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: Some(owner.uid.clone()),
            ..Default::default()
        })
    }

    fn snapshot(&self) -> CertificateAttemptStatus {
        CertificateAttemptStatus { steps: self.log.steps.clone(), ..self.status.clone() }
    }

    async fn save(&mut self, api: &Api<CertificateAttempt>) -> Result<()> {
        apply_status(self.ctx, api, &self.attempt.name_any(), &self.snapshot()).await?;
        self.order_recorded = self.status.order.is_some();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Halt {
        let status = kube::core::Status::failure("no", "Reason").with_code(code);
        Halt::Api(Error::Kube(kube::Error::Api(Box::new(status))))
    }

    #[test]
    fn a_refused_write_fails_the_attempt_and_other_api_errors_are_tried_again() {
        assert!(matches!(settle(Err(api_error(422))), Ok(Transition::Fail(f)) if f.code == C::ApiServerRefused));
        assert!(matches!(settle(Err(api_error(403))), Ok(Transition::Fail(f)) if f.code == C::ApiServerRefused));
        assert!(matches!(settle(Err(api_error(409))), Err(Error::Kube(_))));
        assert!(matches!(settle(Err(api_error(500))), Err(Error::Kube(_))));
    }

    #[test]
    fn a_halt_becomes_the_transition_it_names() {
        let wait = Duration::from_secs(5);
        assert!(matches!(settle(Err(Halt::Poll(wait))), Ok(Transition::Poll(w)) if w == wait));
        let failure = Failure::new(C::Timeout, "too long");
        assert!(matches!(settle(Err(failure.into())), Ok(Transition::Fail(f)) if f.code == C::Timeout));
        assert!(matches!(settle(Ok(Transition::Succeed)), Ok(Transition::Succeed)));
    }
}
