//! The attempt's phase machine. `drive` runs one pass: it matches on the phase, calls that
//! phase's function, and applies the typed transition it returns, until the attempt must wait
//! (status written, look again later) or ends. What happens in a phase is in its function:
//!
//! Pending → Keying → Ordering → Presenting → Validating → Finalizing → Storing → Succeeded
//! (local issuers go Keying → Finalizing), or Failed at any step.
//!
//! Write-ahead: before a side effect that must not be repeated (a CSR for a key, an order at
//! the CA), what is needed to resume is persisted: the key in a Secret owned by the attempt,
//! the order URL in status. A pass that crashes resumes from the last persisted phase.

use super::{cleanup, finish_status, key_secret_name};
use crate::{
    api::{
        CertificateAttempt, FIELD_MANAGER, IssuerKind, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
        attempt::{AttemptPhase, CertificateAttemptStatus, StepPhase, ValidationRecord},
        certificate::{KeyEncoding, RotationPolicy},
        issuer::CnameStrategy,
    },
    controller::{apply_status, cache::Verified, context::Context},
    error::{Error, Result},
    issuance::{
        Failure, FailureCode as C, Obtained,
        acme::{
            account::{AccountSource, AcmeAccount},
            directory, order,
        },
        failure::is_refusal,
        local,
        signer::{Signer, load_signer},
        steps::StepLog,
    },
    keystore::{self, Keystore},
    pki::PrivateKey,
    policy::adopt::Adoption,
    secret::{self, SecretContents},
    solver::{self, ChallengeKind, dns_persist01, dns01, http01},
};
use instant_acme::OrderStatus as CaOrder;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

pub const GENERATE_KEY_STEP: &str = "GenerateKey";
const PLACE_ORDER_STEP: &str = "PlaceOrder";

/// How long an ACME attempt may run before it is given up.
const ACME_ATTEMPT_TIMEOUT: SignedDuration = SignedDuration::from_hours(1);
/// How long to wait for a DNS-01 record to be served before asking the CA anyway.
const PROPAGATION_LIMIT: SignedDuration = SignedDuration::from_mins(2);
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
    /// The attempt ends without a certificate.
    Fail(Failure),
    /// The Secret holds the new certificate.
    Succeed,
}

/// Everything one pass works with; what is not in `status` lives only for the pass.
struct Pass<'a> {
    ctx: &'a Context,
    attempt: &'a CertificateAttempt,
    namespace: String,
    status: CertificateAttemptStatus,
    log: StepLog,
    signer: Option<Signer>,
    account: Option<Arc<AcmeAccount>>,
    order: Option<instant_acme::Order>,
    key: Option<PrivateKey>,
    obtained: Option<Obtained>,
    reregistered: bool,
    /// This pass recorded that it is about to place the order.
    order_intent_saved: bool,
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
        order_intent_saved: false,
    };
    let before = attempt.status.clone().unwrap_or_default();
    for _ in 0..MAX_STEPS_PER_PASS {
        let transition = match pass.step().await {
            Ok(t) => t,
            Err(Error::Kube(e)) => match is_refusal(&e) {
                Some(refusal) => Transition::Fail(Failure::refused("a write of the attempt", refusal)),
                None => return Err(Error::Kube(e)),
            },
            Err(e) => return Err(e),
        };
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
            Transition::Fail(failure) => return pass.end(api, Some(failure)).await,
            Transition::Succeed => return pass.end(api, None).await,
        }
    }
    pass.save(api).await?;
    Ok(Action::requeue(Duration::ZERO))
}

impl Pass<'_> {
    /// The phase machine: one function per phase.
    async fn step(&mut self) -> Result<Transition> {
        match self.status.phase {
            AttemptPhase::Pending => Ok(self.pending()),
            AttemptPhase::Keying => self.keying().await,
            AttemptPhase::Ordering => self.ordering().await,
            AttemptPhase::Presenting => self.presenting().await,
            AttemptPhase::Validating => self.validating().await,
            AttemptPhase::Finalizing => self.finalizing().await,
            AttemptPhase::Storing => self.storing().await,
            // Ended attempts are settled by the reconciler before any pass begins.
            AttemptPhase::Succeeded | AttemptPhase::Failed | AttemptPhase::Cancelled | AttemptPhase::Rejected => {
                Ok(Transition::Wait(Duration::from_secs(3600)))
            }
        }
    }

    /// Pending: note the start (kept across restarts) and get a key.
    fn pending(&mut self) -> Transition {
        self.status.started_at.get_or_insert_with(|| Time(Timestamp::now()));
        Transition::Next(AttemptPhase::Keying)
    }

    /// Keying: the key for this attempt. ACME keys are saved in a Secret owned by the attempt
    /// before the CA sees a CSR; a local signature needs no such care (nothing leaves).
    async fn keying(&mut self) -> Result<Transition> {
        let signer = match self.signer().await? {
            Ok(signer) => signer,
            Err(failure) => return Ok(Transition::Fail(failure)),
        };
        let acme = matches!(signer, Signer::Acme(_));
        if acme {
            // Made for a local issuer that has become an ACME one: what it will set up must be
            // cleaned up, so it holds its finalizer from here on.
            super::hold(&self.ctx.namespaced(&self.namespace), self.attempt).await?;
        }
        self.log.begin(GENERATE_KEY_STEP);
        let (key, how) = match self.key_for(acme).await? {
            Ok(found) => found,
            Err(failure) => {
                self.log.fail(failure.message.clone());
                return Ok(Transition::Fail(failure));
            }
        };
        self.log.succeed(how);
        self.key = Some(key);
        self.signer = Some(signer);
        Ok(if acme { Transition::Persist(AttemptPhase::Ordering) } else { Transition::Next(AttemptPhase::Finalizing) })
    }

    /// Ordering: place the order within the issuer's limit of orders in flight. The intent is
    /// recorded first and the order's URL right after: an attempt found with the intent but no
    /// URL was stopped in between, and takes up the order it placed from the account's list of
    /// orders (RFC 8555 §7.1.2.1). A CA without that list gets asked again (Let's Encrypt
    /// answers a repeated request with the same pending order).
    async fn ordering(&mut self) -> Result<Transition> {
        if let Some(wait) = self.acme_guard() {
            return Ok(wait);
        }
        let Some(issuer) = self.acme_issuer().await? else { return Ok(self.issuer_gone()) };
        let account = match self.account(&issuer).await? {
            Ok(account) => account,
            Err(failure) => return Ok(Transition::Fail(failure)),
        };
        if !self.order_intent_saved {
            let stopped = self.log.steps.iter().any(|s| s.name == PLACE_ORDER_STEP && s.phase == StepPhase::Running);
            if stopped && let Some(placed) = order::find_placed(&account, &self.attempt.spec).await {
                self.log.succeed(format!("found order {} placed before the operator stopped", placed.url));
                self.status.order = Some(placed);
                return Ok(Transition::Persist(AttemptPhase::Presenting));
            }
            self.log.begin(PLACE_ORDER_STEP);
            self.order_intent_saved = true;
            return Ok(Transition::Persist(AttemptPhase::Ordering));
        }
        let issuer_key = self.issuer_key();
        let sends_replaces = self.ctx.sends_replaces(&issuer_key);
        match order::place(&account, &self.attempt.spec, &issuer, sends_replaces).await {
            Ok(placed) => {
                self.log.succeed(format!("placed order {}", placed.url));
                self.status.order = Some(placed);
                Ok(Transition::Persist(AttemptPhase::Presenting))
            }
            Err(failure) => {
                if failure.code == C::ReplacesNotReflected {
                    self.ctx.forget_replaces(&issuer_key);
                }
                self.log.fail(failure.message.clone());
                Ok(Transition::Fail(failure))
            }
        }
    }

    /// Presenting: publish each pending challenge's record once, then tell the CA to check
    /// them as soon as they can be seen (DNS-01 records are looked up on later passes).
    async fn presenting(&mut self) -> Result<Transition> {
        let (issuer, account, mut order) = match self.open_order().await? {
            Ok(opened) => opened,
            Err(transition) => return Ok(transition),
        };
        if order.state().status != CaOrder::Pending {
            self.order = Some(order);
            return Ok(Transition::Next(AttemptPhase::Validating));
        }
        if !self.log.steps.iter().any(|s| s.name == "Present") {
            self.log.begin("Present");
        }
        let mut challenges = match order::challenges(&account, &mut order, &issuer.solvers).await {
            Ok(c) => c,
            Err(failure) => return Ok(Transition::Fail(failure)),
        };
        let persist_issuers = match self.persist_values(&issuer, &account, &mut challenges).await {
            Ok(names) => names,
            Err(failure) => {
                self.log.fail(failure.message.clone());
                return Ok(Transition::Fail(failure));
            }
        };
        if self.status.challenges.is_empty() {
            // Write-ahead: the records are known before any is published, so that cleanup
            // finds whatever a pass stopped midway had published.
            self.status.challenges = challenges.iter().map(|c| c.record.clone()).collect();
            self.order = Some(order);
            return Ok(Transition::Persist(AttemptPhase::Presenting));
        }
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for challenge in challenges {
            let mut record = challenge.record.clone();
            if let Some(earlier) = self.status.challenges.iter().find(|r| r.dns_name == record.dns_name) {
                record.presented_at = earlier.presented_at.clone();
                record.delegated_to = earlier.delegated_to.clone();
                record.dns_check = earlier.dns_check.clone();
            }
            if challenge.pending {
                if record.presented_at.is_none() {
                    if let Err(failure) = self.delegate(&challenge, &mut record).await {
                        self.log.fail(failure.message.clone());
                        return Ok(Transition::Fail(failure));
                    }
                    if let Err(failure) = self.present(&challenge, &record).await? {
                        self.log.fail(failure.message.clone());
                        return Ok(Transition::Fail(failure));
                    }
                    record.presented_at = Some(Time(Timestamp::now()));
                }
                if challenge.kind == ChallengeKind::DnsPersist01
                    && let Err(failure) =
                        self.persist_check(&challenge, &mut record, &persist_issuers, account.uri()).await?
                {
                    // Failed before the CA was told anything: no failed validation at the CA.
                    self.upsert_record(record);
                    self.log.fail(failure.message.clone());
                    return Ok(Transition::Fail(failure));
                }
                self.serve(&challenge);
                if self.visible(&challenge, &mut record).await {
                    ready.push((record.dns_name.clone(), challenge.kind));
                } else {
                    waiting.push(record.dns_name.clone());
                }
            }
            self.upsert_record(record);
        }
        if !waiting.is_empty() {
            return Ok(Transition::Wait(Duration::from_secs(2)));
        }
        if let Err(failure) = order::tell_ready(&account, &mut order, &ready).await {
            return Ok(Transition::Fail(failure));
        }
        self.log.succeed(format!("published {} validation record(s) and told the CA to check them", ready.len()));
        self.log.begin("Validate");
        self.order = Some(order);
        Ok(Transition::Persist(AttemptPhase::Validating))
    }

    /// Validating: the CA checks the records; follow its verdict per name.
    async fn validating(&mut self) -> Result<Transition> {
        let (issuer, account, mut order) = match self.open_order().await? {
            Ok(opened) => opened,
            Err(transition) => return Ok(transition),
        };
        self.status.order = Some(order::order_status(&mut order));
        match order.state().status {
            CaOrder::Pending => {
                self.serve_again(&account, &mut order, &issuer).await;
                if let Err(failure) = order::challenge_states(&account, &mut order, &mut self.status.challenges).await {
                    return Ok(Transition::Fail(failure));
                }
                Ok(Transition::Wait(self.poll_interval()))
            }
            CaOrder::Invalid => {
                let failure = order::invalid_order(&mut order, &mut self.status).await;
                self.log.fail(failure.message.clone());
                Ok(Transition::Fail(failure))
            }
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
    async fn finalizing(&mut self) -> Result<Transition> {
        let signer = match self.signer().await? {
            Ok(signer) => signer,
            Err(failure) => return Ok(Transition::Fail(failure)),
        };
        if !matches!(signer, Signer::Acme(_)) {
            let Some(key) = self.key.take() else { return Ok(Transition::Next(AttemptPhase::Keying)) };
            return Ok(match local::sign(&self.attempt.spec, &signer, key, &mut self.log) {
                Ok(obtained) => {
                    self.obtained = Some(obtained);
                    Transition::Next(AttemptPhase::Storing)
                }
                Err(failure) => Transition::Fail(failure),
            });
        }
        self.signer = Some(signer);
        if let Some(wait) = self.acme_guard() {
            return Ok(wait);
        }
        let Some(issuer) = self.acme_issuer().await? else { return Ok(self.issuer_gone()) };
        let account = match self.account(&issuer).await? {
            Ok(account) => account,
            Err(failure) => return Ok(Transition::Fail(failure)),
        };
        let key = match self.saved_key().await? {
            Ok(key) => key,
            Err(failure) => return Ok(Transition::Fail(failure)),
        };
        let mut order = match self.order(&account).await {
            Ok(order) => order,
            Err(failure) => return Ok(Transition::Fail(failure)),
        };
        self.status.order = Some(order::order_status(&mut order));
        match order.state().status {
            CaOrder::Ready => {
                self.log.begin("Finalize");
                Ok(match order::finalize(&account, &mut order, &self.attempt.spec, &key).await {
                    Ok(()) => {
                        self.log.succeed("sent the CSR");
                        Transition::Wait(Duration::from_secs(1))
                    }
                    Err(failure) => Transition::Fail(failure),
                })
            }
            CaOrder::Pending | CaOrder::Processing => Ok(Transition::Wait(Duration::from_secs(1))),
            CaOrder::Invalid => Ok(Transition::Fail(order::invalid_order(&mut order, &mut self.status).await)),
            CaOrder::Valid => {
                self.log.begin("Download");
                match order::download(&account, &mut order, &issuer, &self.attempt.spec, &key).await {
                    Ok(None) => Ok(Transition::Wait(Duration::from_secs(1))),
                    Ok(Some(downloaded)) => {
                        self.log.succeed(downloaded.chain_note);
                        self.log.begin("Verify");
                        self.log.succeed(format!(
                            "the certificate matches the key and names; valid until {}",
                            downloaded.obtained.info.not_after
                        ));
                        self.obtained = Some(downloaded.obtained);
                        Ok(Transition::Next(AttemptPhase::Storing))
                    }
                    Err(failure) => {
                        self.log.fail(failure.message.clone());
                        Ok(Transition::Fail(failure))
                    }
                }
            }
        }
    }

    /// Storing: write the verified certificate to the target Secret in one server-side apply,
    /// after checking again that certpilot may write it.
    async fn storing(&mut self) -> Result<Transition> {
        let Some(obtained) = self.obtained.take() else {
            // Nothing in hand (a pass never stores across restarts): obtain it again.
            return Ok(Transition::Next(AttemptPhase::Finalizing));
        };
        self.log.begin("WriteSecret");
        match self.write_target(&obtained).await? {
            Ok(Stored::Written) => {
                self.log.succeed(format!("wrote Secret {}", self.attempt.spec.secret_name));
                self.obtained = Some(obtained);
                Ok(Transition::Succeed)
            }
            Ok(Stored::TakenOver) => {
                let name = &self.attempt.spec.secret_name;
                self.log.succeed(format!("took over Secret {name} from cert-manager and wrote it"));
                self.obtained = Some(obtained);
                Ok(Transition::Succeed)
            }
            Ok(Stored::Already(info)) => {
                self.log.succeed(format!(
                    "Secret {} already holds this attempt's certificate (its status was not recorded before a restart)",
                    self.attempt.spec.secret_name
                ));
                self.obtained = Some(Obtained { info: *info, ..obtained });
                Ok(Transition::Succeed)
            }
            Err(failure) => {
                self.log.fail(failure.message.clone());
                Ok(Transition::Fail(failure))
            }
        }
    }

    /// Handles what a phase may recover from: the CA forgot the account (register again, place
    /// a new order), or a transient hiccup while an order is under way (try again shortly).
    async fn recover(&mut self, transition: Transition) -> Result<Transition> {
        let Transition::Fail(failure) = transition else { return Ok(transition) };
        let ordering = matches!(
            self.status.phase,
            AttemptPhase::Ordering | AttemptPhase::Presenting | AttemptPhase::Validating | AttemptPhase::Finalizing
        );
        if failure.code == C::AccountDoesNotExist && ordering && !self.reregistered {
            return self.reregister(failure).await;
        }
        if failure.code.is_transient() && ordering && !self.timed_out() {
            tracing::warn!(attempt = %self.attempt.name_any(), error = %failure.message, "transient ACME failure; trying again");
            let wait = if failure.code == C::BadNonce { Duration::from_millis(500) } else { Duration::from_secs(10) };
            return Ok(Transition::Wait(wait));
        }
        Ok(Transition::Fail(failure))
    }

    async fn reregister(&mut self, failure: Failure) -> Result<Transition> {
        self.reregistered = true;
        let Some(issuer) = self.acme_issuer().await? else { return Ok(self.issuer_gone()) };
        let Some(stale) = self.account.take() else { return Ok(Transition::Fail(failure)) };
        let secrets = self.issuer_secrets();
        let key = self.issuer_key();
        let source = AccountSource {
            key: &key,
            issuer_name: &self.attempt.spec.issuer_ref.name,
            spec: &issuer,
            secrets: &secrets,
        };
        match self.ctx.accounts.reregister(&source, &stale).await? {
            Ok(account) => {
                self.log.begin("RegisterAccount");
                self.log.succeed(format!(
                    "the CA no longer knew account {}; registered again as {}; a new order follows",
                    stale.uri(),
                    account.uri()
                ));
                self.account = Some(account);
                self.order = None;
                self.status.order = None;
                self.status.challenges.clear();
                Ok(Transition::Persist(AttemptPhase::Ordering))
            }
            Err(again) => Ok(Transition::Fail(again)),
        }
    }

    /// Ends the attempt: status first, then cleanup, then the finalizer; an Event and a metric.
    async fn end(mut self, api: &Api<CertificateAttempt>, failure: Option<Failure>) -> Result<Action> {
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
        if let Some(failure) = &failure {
            self.ctx.metrics.attempt_failed(kind, failure.code.as_str());
        }
        Ok(Action::await_change())
    }

    /// An Event on the Certificate for the attempt's outcome.
    async fn announce(&self, failure: Option<&Failure>) {
        let Some(certificate) = self.certificate_ref() else { return };
        let name = self.attempt.name_any();
        match (failure, &self.obtained) {
            (None, Some(obtained)) => {
                let note = format!(
                    "attempt {name} wrote Secret {}: serial {}, valid until {}",
                    self.attempt.spec.secret_name, obtained.info.serial_hex, obtained.info.not_after
                );
                self.ctx.event(&certificate, false, "Issued", "Issue", note).await;
            }
            (Some(failure), _) => {
                let note = format!("attempt {name} failed ({}): {}", failure.code, failure.message);
                self.ctx.event(&certificate, true, "AttemptFailed", "Issue", note).await;
            }
            (None, None) => {}
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

    async fn save(&self, api: &Api<CertificateAttempt>) -> Result<()> {
        apply_status(self.ctx, api, &self.attempt.name_any(), &self.snapshot()).await.map(|_| ())
    }

    // --- what the phases share ---

    fn issuer_key(&self) -> String {
        self.attempt.spec.issuer_ref.key(&self.namespace)
    }

    fn issuer_secrets(&self) -> Api<Secret> {
        let kind = self.attempt.spec.issuer_ref.kind;
        self.ctx.namespaced(&self.ctx.issuer_secret_namespace(kind, Some(&self.namespace)))
    }

    /// What the issuer signs with (loaded once per pass).
    async fn signer(&mut self) -> Result<std::result::Result<Signer, Failure>> {
        if let Some(signer) = self.signer.take() {
            return Ok(Ok(signer));
        }
        let Some(spec) = cleanup::issuer_spec(self.ctx, self.attempt) else {
            return Ok(Err(Failure::new(
                C::IssuerNotFound,
                format!("{} does not exist", self.attempt.spec.issuer_ref),
            )));
        };
        Ok(load_signer(&self.issuer_secrets(), &spec)
            .await?
            .map_err(|not_ready| Failure::new(C::IssuerNotReady, not_ready.message)))
    }

    async fn acme_issuer(&mut self) -> Result<Option<crate::api::issuer::AcmeIssuer>> {
        let signer = match self.signer().await? {
            Ok(signer) => signer,
            Err(_) => return Ok(None),
        };
        let acme = match &signer {
            Signer::Acme(acme) => Some((**acme).clone()),
            _ => None,
        };
        self.signer = Some(signer);
        Ok(acme)
    }

    /// What Presenting and Validating start from: the issuer, its account and the attempt's
    /// order, or the transition to take when one of them is not to be had.
    async fn open_order(
        &mut self,
    ) -> Result<std::result::Result<(crate::api::issuer::AcmeIssuer, Arc<AcmeAccount>, instant_acme::Order), Transition>>
    {
        if let Some(wait) = self.acme_guard() {
            return Ok(Err(wait));
        }
        let Some(issuer) = self.acme_issuer().await? else { return Ok(Err(self.issuer_gone())) };
        let account = match self.account(&issuer).await? {
            Ok(account) => account,
            Err(failure) => return Ok(Err(Transition::Fail(failure))),
        };
        Ok(match self.order(&account).await {
            Ok(order) => Ok((issuer, account, order)),
            Err(failure) => Err(Transition::Fail(failure)),
        })
    }

    fn issuer_gone(&self) -> Transition {
        let issuer = &self.attempt.spec.issuer_ref;
        Transition::Fail(Failure::new(
            C::IssuerNotReady,
            format!("{issuer} no longer exists or is no longer an ACME issuer; the order was abandoned"),
        ))
    }

    async fn account(
        &mut self,
        issuer: &crate::api::issuer::AcmeIssuer,
    ) -> Result<std::result::Result<Arc<AcmeAccount>, Failure>> {
        if let Some(account) = &self.account {
            return Ok(Ok(account.clone()));
        }
        let secrets = self.issuer_secrets();
        let key = self.issuer_key();
        let source = AccountSource {
            key: &key,
            issuer_name: &self.attempt.spec.issuer_ref.name,
            spec: issuer,
            secrets: &secrets,
        };
        let account = self.ctx.accounts.get(&source).await?;
        if let Ok(account) = &account {
            self.account = Some(account.clone());
        }
        Ok(account)
    }

    async fn order(&mut self, account: &AcmeAccount) -> std::result::Result<instant_acme::Order, Failure> {
        if let Some(order) = self.order.take() {
            return Ok(order);
        }
        let Some(url) = self.status.order.as_ref().map(|o| o.url.clone()) else {
            return Err(Failure::new(C::Internal, "the attempt has no order URL"));
        };
        order::load(account, &url).await
    }

    fn running_for(&self) -> SignedDuration {
        self.status.started_at.as_ref().map(|t| Timestamp::now().duration_since(t.0)).unwrap_or_default()
    }

    fn timed_out(&self) -> bool {
        self.running_for() > ACME_ATTEMPT_TIMEOUT
    }

    /// Before any ACME phase: the attempt's time is not up, and it holds one of the issuer's
    /// order slots (or waits for one).
    fn acme_guard(&self) -> Option<Transition> {
        if self.timed_out() {
            return Some(Transition::Fail(Failure::new(
                C::Timeout,
                format!(
                    "the order did not complete within {ACME_ATTEMPT_TIMEOUT:#}; see the challenges for what the CA is still waiting on"
                ),
            )));
        }
        (!self.ctx.order_slots.take(&self.issuer_key(), &self.attempt.name_any()))
            .then_some(Transition::Wait(Duration::from_secs(5)))
    }

    /// Polls the CA often at first, then less: a slow validation does not cost a request a second.
    fn poll_interval(&self) -> Duration {
        poll_interval(self.running_for())
    }

    fn upsert_record(&mut self, record: ValidationRecord) {
        match self.status.challenges.iter_mut().find(|r| r.dns_name == record.dns_name) {
            Some(existing) => *existing = record,
            None => self.status.challenges.push(record),
        }
    }

    /// Publishes a challenge's record where the CA will look (routes, DNS); once per attempt.
    async fn present(
        &self,
        challenge: &order::Challenge,
        record: &ValidationRecord,
    ) -> Result<std::result::Result<(), Failure>> {
        let name = &record.dns_name;
        match challenge.kind {
            ChallengeKind::Http01 => {
                let http = challenge.solver.http01.clone().unwrap_or_default();
                let host = name.trim_start_matches("*.");
                http01::route(&self.ctx.routes, &self.attempt.name_any(), host, &challenge.token, &http).await?;
                Ok(Ok(()))
            }
            ChallengeKind::TlsAlpn01 => Ok(Ok(())),
            // The domain's owner published the record; certpilot writes nothing, ever.
            ChallengeKind::DnsPersist01 => Ok(Ok(())),
            ChallengeKind::Dns01 => {
                let Some(written) = record.delegated_to.as_deref().or(record.record_name.as_deref()) else {
                    return Ok(Err(Failure::new(C::Internal, format!("no DNS-01 record name for {name}"))));
                };
                let provider = match self.dns_provider(challenge).await? {
                    Ok(provider) => provider,
                    Err(failure) => return Ok(Err(failure)),
                };
                let value = record.record_value.clone().unwrap_or_default();
                Ok(dns01::present(&provider, written, &value).await)
            }
        }
    }

    /// The DNS provider a DNS-01 challenge's solver names.
    async fn dns_provider(
        &self,
        challenge: &order::Challenge,
    ) -> Result<std::result::Result<dns01::Configured, Failure>> {
        let Some(solver) = challenge.solver.dns01.as_ref() else {
            return Ok(Err(Failure::new(C::NoSolver, "the challenge's solver has no dns01")));
        };
        let ambient = self.ctx.ambient_credentials_allowed(self.attempt.spec.issuer_ref.kind);
        dns01::configured(&self.issuer_secrets(), solver, ambient).await
    }

    /// Where the DNS-01 record for `challenge` goes (the end of a CNAME chain when the solver
    /// follows them), noted in the validation record before anything is published.
    async fn delegate(
        &self,
        challenge: &order::Challenge,
        record: &mut ValidationRecord,
    ) -> std::result::Result<(), Failure> {
        let Some(solver) = challenge.solver.dns01.as_ref().filter(|d| d.cname_strategy == Some(CnameStrategy::Follow))
        else {
            return Ok(());
        };
        let servers = dns01::check_servers(&self.ctx.settings.dns_check_nameservers, solver);
        let target = dns01::write_name(solver, &servers, &record.dns_name).await?;
        let named = record.record_name.as_deref().map(|n| format!("{}.", n.trim_end_matches('.')));
        record.delegated_to = (named.as_deref() != Some(target.as_str())).then_some(target);
        Ok(())
    }

    /// The value each DNS-PERSIST-01 challenge's record must have (naming the account and the
    /// CA's first issuer domain name); returns the CA's issuer domain names (none when no
    /// challenge is DNS-PERSIST-01).
    async fn persist_values(
        &self,
        issuer: &crate::api::issuer::AcmeIssuer,
        account: &AcmeAccount,
        challenges: &mut [order::Challenge],
    ) -> std::result::Result<Vec<String>, Failure> {
        if !challenges.iter().any(|c| c.kind == ChallengeKind::DnsPersist01) {
            return Ok(Vec::new());
        }
        let issuers = self.issuer_domain_names(issuer).await?;
        for challenge in challenges.iter_mut().filter(|c| c.kind == ChallengeKind::DnsPersist01) {
            let solver = challenge.solver.dns_persist01.clone().unwrap_or_default();
            challenge.record.record_value =
                dns_persist01::value(&solver, &challenge.record.dns_name, account.uri(), &issuers);
        }
        Ok(issuers)
    }

    /// The CA's issuer domain names: from the issuer's status, else from the CA's directory.
    async fn issuer_domain_names(
        &self,
        issuer: &crate::api::issuer::AcmeIssuer,
    ) -> std::result::Result<Vec<String>, Failure> {
        let cached = self.ctx.caches.issuer(&self.attempt.spec.issuer_ref, &self.namespace);
        let listed = cached.and_then(|(_, status)| status).map(|s| s.issuer_domain_names).unwrap_or_default();
        directory::issuer_domain_names(issuer, listed).await
    }

    /// Looks the DNS-PERSIST-01 record up and judges it as the CA would, before the CA is told:
    /// a record that would not do fails the attempt, saying what is wrong and what to publish
    /// (unless the solver may publish it itself through RFC 2136, which it then does, once).
    async fn persist_check(
        &self,
        challenge: &order::Challenge,
        record: &mut ValidationRecord,
        issuers: &[String],
        account_uri: &str,
    ) -> Result<std::result::Result<(), Failure>> {
        let solver = challenge.solver.dns_persist01.clone().unwrap_or_default();
        let servers = dns_persist01::check_servers(&solver, &self.ctx.settings.dns_check_nameservers);
        let name = record.record_name.clone().unwrap_or_default();
        let publish = record.record_value.clone().unwrap_or_default();
        let wildcard = record.dns_name.starts_with("*.");
        let expected = crate::policy::persist::Expected { issuer_domain_names: issuers, account_uri, wildcard };
        let duration = self.attempt.spec.duration.as_deref();
        let horizon = || dns_persist01::Horizon::for_certificate(Timestamp::now(), duration);
        let mut verdict = dns_persist01::precheck(&servers, &name, &expected, &publish, horizon()).await;
        let mut published = None;
        if let (dns_persist01::Verdict::Refused { .. }, Some(rfc2136)) = (&verdict, &solver.rfc2136) {
            if let Err(failure) = self.publish_persist_record(rfc2136, &name, &publish).await? {
                return Ok(Err(failure));
            }
            published = Some(format!(
                "certpilot published {name} TXT \"{publish}\" (dnsPersist01.rfc2136); later issuances reuse it"
            ));
            verdict = dns_persist01::precheck(&servers, &name, &expected, &publish, horizon()).await;
        }
        Ok(match verdict {
            dns_persist01::Verdict::Authorised { warning } => {
                if let Some(warning) = &warning {
                    self.warn_persist_expiring(warning).await;
                }
                record.dns_check = warning.or(published);
                Ok(())
            }
            dns_persist01::Verdict::Unchecked(note) => {
                record.dns_check = Some(note);
                Ok(())
            }
            dns_persist01::Verdict::Refused { problem, failure } => {
                record.dns_check = Some(problem);
                Err(failure)
            }
        })
    }

    /// The record authorising the account lapses soon: the log and a Warning Event say so.
    async fn warn_persist_expiring(&self, warning: &str) {
        tracing::warn!(attempt = %self.attempt.name_any(), "{warning}");
        if let Some(certificate) = self.certificate_ref() {
            self.ctx.event(&certificate, true, "PersistRecordExpiring", "Validate", warning.to_string()).await;
        }
    }

    /// Publishes the DNS-PERSIST-01 record with the solver's RFC 2136 server.
    async fn publish_persist_record(
        &self,
        rfc2136: &crate::api::issuer::Rfc2136Solver,
        name: &str,
        value: &str,
    ) -> Result<std::result::Result<(), Failure>> {
        let provider = match dns01::rfc2136::Rfc2136::new(&self.issuer_secrets(), rfc2136).await? {
            Ok(provider) => dns01::Configured::Rfc2136(provider),
            Err(failure) => return Ok(Err(failure)),
        };
        tracing::info!(attempt = %self.attempt.name_any(), record = %name, "publishing the dns-persist-01 record");
        Ok(dns01::present(&provider, name, value).await)
    }

    /// Answers a challenge from the operator's own servers (in memory: again after a restart).
    fn serve(&self, challenge: &order::Challenge) {
        match challenge.kind {
            ChallengeKind::Http01 => self.ctx.solvers.add_http01(&challenge.token, &challenge.key_authorization),
            ChallengeKind::TlsAlpn01 if self.ctx.solvers.tls_alpn01(&challenge.record.dns_name).is_none() => {
                match solver::tls_alpn01::certificate(&challenge.record.dns_name, &challenge.digest) {
                    Ok(certificate) => self.ctx.solvers.add_tls_alpn01(&challenge.record.dns_name, certificate),
                    Err(error) => tracing::warn!(%error, "could not make the TLS-ALPN-01 certificate"),
                }
            }
            _ => {}
        }
    }

    /// While the CA validates, a restarted operator must still answer from memory.
    async fn serve_again(
        &self,
        account: &AcmeAccount,
        order: &mut instant_acme::Order,
        issuer: &crate::api::issuer::AcmeIssuer,
    ) {
        if self.status.challenges.iter().all(|r| r.type_ == "dns-01" || r.type_ == "dns-persist-01") {
            return;
        }
        if let Ok(challenges) = order::challenges(account, order, &issuer.solvers).await {
            challenges.iter().filter(|c| c.pending || c.record.status == "processing").for_each(|c| self.serve(c));
        }
    }

    /// Whether the CA can see the record yet: DNS-01 records are looked up (for a while; then
    /// the CA is asked anyway, and at once when no server can be asked or none answers); the
    /// others are served at once. What the look-up found goes into the validation record.
    async fn visible(&self, challenge: &order::Challenge, record: &mut ValidationRecord) -> bool {
        let Some(solver) = challenge.solver.dns01.as_ref().filter(|_| challenge.kind == ChallengeKind::Dns01) else {
            return true;
        };
        let servers = dns01::check_servers(&self.ctx.settings.dns_check_nameservers, solver);
        let name = record.delegated_to.clone().or_else(|| record.record_name.clone()).unwrap_or_default();
        let found = dns01::served(solver, &servers, &name, record.record_value.as_deref().unwrap_or_default()).await;
        record.dns_check = found.describe(&name);
        let waited = record.presented_at.as_ref().map(|t| Timestamp::now().duration_since(t.0)).unwrap_or_default();
        match found {
            dns01::Served::Yes
            | dns01::Served::NoAnswer { .. }
            | dns01::Served::Unchecked
            | dns01::Served::ConfirmedByProvider { .. } => true,
            dns01::Served::NotYet { .. } if waited > PROPAGATION_LIMIT => {
                record.dns_check =
                    Some(format!("{name} was still not served after {PROPAGATION_LIMIT:#}; the CA is asked anyway"));
                true
            }
            dns01::Served::NotYet { .. } => false,
        }
    }

    /// The key for this attempt: the Secret's own key when rotation is off and it still fits,
    /// else (ACME) the key saved by an earlier pass, else a new one (saved first for ACME).
    async fn key_for(&self, acme: bool) -> Result<std::result::Result<(PrivateKey, String), Failure>> {
        let spec = &self.attempt.spec.private_key;
        if spec.rotation_policy == RotationPolicy::Never {
            let target = self.ctx.namespaced::<Secret>(&self.namespace).get_opt(&self.attempt.spec.secret_name).await?;
            let kept = target
                .filter(|t| {
                    secret::may_write(&t.metadata, &self.attempt.spec.certificate_name)
                        || matches!(self.adoption(t), Some(Adoption::Adoptable(_)))
                })
                .and_then(|t| secret::stored_key(&t).ok())
                .filter(|k| k.matches(spec));
            if let Some(key) = kept {
                let how = format!("kept the {} key already in the Secret (rotationPolicy: Never)", key.describe());
                return Ok(Ok((key, how)));
            }
        }
        if acme && let Ok(key) = self.saved_key().await? {
            return Ok(Ok((key, "reused the key saved earlier by this attempt".to_string())));
        }
        let key = match generate(spec.clone()).await {
            Ok(key) => key,
            Err(failure) => return Ok(Err(failure)),
        };
        let how = format!("generated a new {} key", key.describe());
        if acme && let Err(failure) = self.save_key(&key).await? {
            return Ok(Err(failure));
        }
        Ok(Ok((key, how)))
    }

    /// The key saved in the attempt's own key Secret (owned by its uid: no one else's).
    async fn saved_key(&self) -> Result<std::result::Result<PrivateKey, Failure>> {
        let name = key_secret_name(&self.attempt.name_any());
        let saved = self.ctx.namespaced::<Secret>(&self.namespace).get_opt(&name).await?;
        let Some(saved) = saved else {
            return Ok(Err(Failure::new(C::Internal, format!("the attempt's key Secret {name} is gone"))));
        };
        if !saved.owner_references().iter().any(|o| Some(&o.uid) == self.attempt.uid().as_ref()) {
            return Ok(Err(not_owned(&name, None)));
        }
        Ok(secret::stored_key(&saved).map_err(|e| Failure::new(C::Internal, format!("Secret {name}: {e}"))))
    }

    async fn save_key(&self, key: &PrivateKey) -> Result<std::result::Result<(), Failure>> {
        let pem = match key.to_pem(KeyEncoding::Pkcs8) {
            Ok(pem) => pem,
            Err(e) => return Ok(Err(Failure::new(C::KeyEncodingFailed, e.to_string()))),
        };
        let name = key_secret_name(&self.attempt.name_any());
        let mut saved = Secret {
            data: Some(BTreeMap::from([(secret::TLS_KEY.to_string(), ByteString(pem.into_bytes()))])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        saved.metadata.name = Some(name.clone());
        saved.metadata.namespace = Some(self.namespace.clone());
        saved.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
        saved.metadata.owner_references =
            Some(vec![self.attempt.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?]);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.ctx.namespaced::<Secret>(&self.namespace).create(&params, &saved).await {
            Ok(_) => Ok(Ok(())),
            // Someone else's Secret of that name: never overwritten.
            Err(e) if crate::error::is_already_exists(&e) => Ok(Err(not_owned(&name, None))),
            Err(e) => match is_refusal(&e) {
                Some(status) => Ok(Err(Failure::refused(&format!("the key Secret {name}"), status))),
                None => Err(e.into()),
            },
        }
    }

    /// Writes the target Secret in one server-side apply, after checking again that it may:
    /// - one the cache shows as certpilot's (for this Certificate, not yet written by this
    ///   attempt) is written on the condition that it is still the version the cache shows;
    /// - one the cache does not show is created by an apply that does not force: a Secret that
    ///   someone else holds conflicts (its `tls.crt`, or its type, is theirs: another
    ///   Certificate's attempt writes under a field manager of its own) instead of being
    ///   overwritten;
    /// - anything else, or when either write is refused, is read and checked first. A Secret
    ///   this very attempt already wrote (its status write was lost) is left as it is; one
    ///   cert-manager wrote that certpilot adopts (checked again now) is taken over.
    async fn write_target(&self, obtained: &Obtained) -> Result<std::result::Result<Stored, Failure>> {
        let spec = &self.attempt.spec;
        let keystores = match self.keystores().await? {
            Ok(keystores) => keystores,
            Err(failure) => return Ok(Err(failure)),
        };
        let built = match self.target_contents(obtained, &keystores) {
            Ok(built) => built,
            Err(failure) => return Ok(Err(failure)),
        };
        let unchecked = match self.cached_target() {
            CachedTarget::Ours(version) => Some(self.apply_target(built.clone(), Some(version), true).await),
            CachedTarget::Absent => Some(self.apply_target(built.clone(), None, false).await),
            CachedTarget::Other => None,
        };
        match unchecked {
            // Changed since the cache saw it, or someone else's: look at it before writing.
            Some(Err(kube::Error::Api(status))) if status.code == 409 || status.code == 422 => {}
            Some(written) => return self.stored(written),
            None => {}
        }
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        if let Some(existing) = secrets.get_opt(&spec.secret_name).await? {
            if !secret::may_write(&existing.metadata, &spec.certificate_name) {
                return match self.adoption(&existing) {
                    Some(Adoption::Adoptable(_)) => {
                        let written = self.take_over(&existing, built).await;
                        Ok(self.stored(written)?.map(|_| Stored::TakenOver))
                    }
                    Some(Adoption::NotAdoptable(reason)) => Ok(Err(not_adoptable(&spec.secret_name, &reason))),
                    None => Ok(Err(not_owned(&spec.secret_name, secret::holder(&existing.metadata)))),
                };
            }
            if let Some(info) = secret::written_by_attempt(&existing, &self.attempt.name_any()) {
                return Ok(Ok(Stored::Already(Box::new(info))));
            }
            if existing.type_.as_deref().is_some_and(|t| t != "kubernetes.io/tls") {
                return Ok(Err(Failure::new(
                    C::SecretTypeMismatch,
                    format!(
                        "Secret {} has type {:?}, but certpilot writes kubernetes.io/tls and the type of a Secret cannot change; delete the Secret so certpilot can recreate it",
                        spec.secret_name,
                        existing.type_.as_deref().unwrap_or_default()
                    ),
                )));
            }
        }
        let written = self.apply_target(built, None, true).await;
        self.stored(written)
    }

    /// Whether certpilot adopts the target Secret for this attempt's names now, if cert-manager
    /// wrote it (`policy::adopt`). Decided at every write: one that expired or changed since
    /// the Certificate looked is not written.
    fn adoption(&self, target: &Secret) -> Option<Adoption> {
        let spec = &self.attempt.spec;
        let names = local::name_request(spec).ok()?;
        secret::adoption(target, &spec.certificate_name, &names, Timestamp::now())
    }

    /// Replaces the adopted Secret `existing` whole (`secret::taken_over`), at its
    /// resourceVersion: one changed meanwhile is refused (409) and looked at again.
    async fn take_over(&self, existing: &Secret, built: Secret) -> kube::Result<Secret> {
        let manager = secret::field_manager(&self.attempt.spec.certificate_name);
        let params = PostParams { field_manager: Some(manager), ..Default::default() };
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        secrets.replace(&self.attempt.spec.secret_name, &params, &secret::taken_over(existing, built)).await
    }

    /// What the cache of certpilot's Secrets says of the target Secret.
    fn cached_target(&self) -> CachedTarget {
        let spec = &self.attempt.spec;
        let Some(cached) = self.ctx.caches.secrets.watched(&self.namespace, &spec.secret_name) else {
            return CachedTarget::Absent;
        };
        let ours = cached.written_for == Some(secret::label_value(&spec.certificate_name))
            && !cached.names_attempt(&self.attempt.name_any());
        if ours { CachedTarget::Ours(cached.version) } else { CachedTarget::Other }
    }

    /// The keystores the attempt asks for, with their passwords read from their Secrets now:
    /// without one, nothing is written (the Secret in place stays whole).
    async fn keystores(&self) -> Result<std::result::Result<Vec<Keystore>, Failure>> {
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        let mut keystores = Vec::new();
        for format in &self.attempt.spec.additional_output_formats {
            let secret = match format.password_secret_ref.as_ref().filter(|_| format.type_.is_keystore()) {
                Some(reference) => secrets.get_opt(&reference.name).await?,
                None => None,
            };
            match keystore::keystore(format, secret.as_ref()) {
                Some(Ok(keystore)) => keystores.push(keystore),
                Some(Err(problem)) => return Ok(Err(Failure::new(C::KeystorePasswordMissing, problem.to_string()))),
                None => {}
            }
        }
        Ok(Ok(keystores))
    }

    /// What the target Secret is to hold.
    fn target_contents(&self, obtained: &Obtained, keystores: &[Keystore]) -> std::result::Result<Secret, Failure> {
        let spec = &self.attempt.spec;
        let key_pem = obtained
            .key
            .to_pem(spec.private_key.encoding)
            .map_err(|e| Failure::new(C::KeyEncodingFailed, e.to_string()))?;
        let formats: Vec<_> = spec.additional_output_formats.iter().map(|f| f.type_).collect();
        secret::build(&SecretContents {
            name: &spec.secret_name,
            namespace: &self.namespace,
            certificate: &spec.certificate_name,
            attempt: &self.attempt.name_any(),
            issuer: &spec.issuer_ref,
            chain_pem: &obtained.chain_pem,
            key_pem: &key_pem,
            key_der: &obtained.key.pkcs8_der(),
            ca_pem: &obtained.ca_pem,
            template: spec.secret_template.as_ref(),
            output_formats: &formats,
            keystores,
            info: &obtained.info,
        })
        .map_err(|e| Failure::new(C::KeyEncodingFailed, e.to_string()))
    }

    /// One server-side apply of the target Secret, at `version` when given, taking fields
    /// other managers hold only when `force`. The manager is this Certificate's own: an apply
    /// that does not force conflicts with the fields another Certificate's attempt wrote.
    async fn apply_target(&self, mut built: Secret, version: Option<String>, force: bool) -> kube::Result<Secret> {
        built.metadata.resource_version = version;
        let manager = secret::field_manager(&self.attempt.spec.certificate_name);
        let params = PatchParams { force, ..PatchParams::apply(&manager) };
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        secrets.patch(&self.attempt.spec.secret_name, &params, &Patch::Apply(&built)).await
    }

    /// What a write of the target Secret came to. What was written is remembered as verified:
    /// it is what the Certificate controller would otherwise read back.
    fn stored(&self, written: kube::Result<Secret>) -> Result<std::result::Result<Stored, Failure>> {
        let name = &self.attempt.spec.secret_name;
        match written {
            Ok(written) => {
                let certificate = self.attempt.spec.certificate_name.clone();
                let verified = Verified {
                    state: secret::classify(Some(&written), &certificate),
                    certificate,
                    version: written.metadata.resource_version.clone(),
                    written_by: Some(self.attempt.name_any()),
                };
                self.ctx.caches.secrets.put_verified(&self.namespace, name, verified);
                Ok(Ok(Stored::Written))
            }
            Err(e) => match is_refusal(&e) {
                Some(status) => Ok(Err(Failure::refused(&format!("Secret {name}"), status))),
                None => Err(e.into()),
            },
        }
    }
}

/// What the cache of certpilot's Secrets says of the target Secret.
enum CachedTarget {
    /// Not there: it does not exist, or it is not certpilot's.
    Absent,
    /// certpilot wrote it for this Certificate, at this resourceVersion.
    Ours(String),
    /// Another Certificate's, or written by this very attempt.
    Other,
}

/// What storing found or did.
enum Stored {
    Written,
    /// Written over the Secret cert-manager wrote, which certpilot adopted.
    TakenOver,
    /// The Secret already holds the certificate this attempt wrote before.
    Already(Box<crate::pki::CertInfo>),
}

/// Generates a key off the async runtime (RSA 4096 takes a while).
async fn generate(spec: crate::api::certificate::PrivateKeySpec) -> std::result::Result<PrivateKey, Failure> {
    tokio::task::spawn_blocking(move || PrivateKey::generate(&spec))
        .await
        .map_err(|e| Failure::new(C::KeyGenerationFailed, e.to_string()))?
        .map_err(|e| Failure::new(C::KeyGenerationFailed, e.to_string()))
}

/// A Secret certpilot may not write; `holder`: the Certificate certpilot wrote it for, if any.
fn not_owned(secret: &str, holder: Option<String>) -> Failure {
    let message = match holder {
        Some(holder) => format!("Secret {secret} belongs to Certificate {holder}; it was left untouched"),
        None => format!(
            "Secret {secret} exists and was not created by certpilot for this Certificate; it was left untouched"
        ),
    };
    Failure::new(C::SecretNotOwned, message)
}

/// A Secret cert-manager wrote that certpilot does not adopt (any more): left untouched.
fn not_adoptable(secret: &str, reason: &crate::policy::adopt::NotAdoptable) -> Failure {
    let message = format!(
        "Secret {secret} was issued by cert-manager, but certpilot cannot adopt it: {reason}; it was left untouched"
    );
    Failure::new(C::SecretNotOwned, message)
}

/// Polls the CA often at first, then less: a slow validation does not cost a request a second.
fn poll_interval(running: SignedDuration) -> Duration {
    match running.as_secs() {
        0..30 => Duration::from_millis(500),
        30..300 => Duration::from_secs(5),
        _ => Duration::from_secs(15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_slows_down_as_an_attempt_runs() {
        assert_eq!(poll_interval(SignedDuration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(poll_interval(SignedDuration::from_secs(60)), Duration::from_secs(5));
        assert_eq!(poll_interval(SignedDuration::from_secs(600)), Duration::from_secs(15));
    }
}
