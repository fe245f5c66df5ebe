//! The issuer and the CA as a pass sees them: what the issuer signs with, its ACME account,
//! the attempt's order, and the guards every ACME phase passes (time left, an order slot).

use super::{Halt, Pass, Phase};
use crate::{
    api::issuer::AcmeIssuer,
    issuance::{
        Failure, FailureCode as C,
        acme::{
            account::{AccountSource, AcmeAccount},
            order,
        },
        signer::{Signer, load_signer},
    },
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use std::{sync::Arc, time::Duration};

/// How long an ACME attempt may run before it is given up.
const ACME_ATTEMPT_TIMEOUT: SignedDuration = SignedDuration::from_hours(1);

impl Pass<'_> {
    pub(super) fn issuer_key(&self) -> String {
        self.attempt.spec.issuer_ref.key(&self.namespace)
    }

    pub(super) fn issuer_secrets(&self) -> Api<Secret> {
        let kind = self.attempt.spec.issuer_ref.kind;
        self.ctx.namespaced(&self.ctx.issuer_secret_namespace(kind, Some(&self.namespace)))
    }

    /// What the issuer signs with (loaded once per pass).
    pub(super) async fn signer(&mut self) -> Phase<Signer> {
        if let Some(signer) = self.signer.take() {
            return Ok(signer);
        }
        let Some(spec) = super::cleanup::issuer_spec(self.ctx, self.attempt) else {
            let issuer = &self.attempt.spec.issuer_ref;
            return Err(Failure::new(C::IssuerNotFound, format!("{issuer} does not exist")).into());
        };
        let signer = load_signer(&self.issuer_secrets(), &spec).await?;
        Ok(signer.map_err(|not_ready| Failure::new(C::IssuerNotReady, not_ready.message))?)
    }

    /// The ACME issuer an order under way was placed with; when it is gone (or no longer
    /// ACME), the order is abandoned.
    pub(super) async fn acme_issuer(&mut self) -> Phase<AcmeIssuer> {
        let signer = match self.signer().await {
            Ok(signer) => signer,
            Err(Halt::Fail(_)) => return Err(self.issuer_gone()),
            Err(halt) => return Err(halt),
        };
        let acme = match &signer {
            Signer::Acme(acme) => Some((**acme).clone()),
            _ => None,
        };
        self.signer = Some(signer);
        acme.ok_or_else(|| self.issuer_gone())
    }

    fn issuer_gone(&self) -> Halt {
        let issuer = &self.attempt.spec.issuer_ref;
        Halt::Fail(Failure::new(
            C::IssuerNotReady,
            format!("{issuer} no longer exists or is no longer an ACME issuer; the order was abandoned"),
        ))
    }

    /// What Presenting and Validating start from: the issuer, its account and the attempt's
    /// order.
    pub(super) async fn open_order(&mut self) -> Phase<(AcmeIssuer, Arc<AcmeAccount>, instant_acme::Order)> {
        self.acme_guard()?;
        let issuer = self.acme_issuer().await?;
        let account = self.account(&issuer).await?;
        let order = self.order(&account).await?;
        Ok((issuer, account, order))
    }

    /// The issuer's account (loaded, or registered, once per pass).
    pub(super) async fn account(&mut self, issuer: &AcmeIssuer) -> Phase<Arc<AcmeAccount>> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
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
        self.account = Some(account.clone());
        Ok(account)
    }

    /// The attempt's order at the CA: the one this pass holds, else loaded from its URL.
    pub(super) async fn order(&mut self, account: &AcmeAccount) -> Phase<instant_acme::Order> {
        if let Some(order) = self.order.take() {
            return Ok(order);
        }
        let Some(url) = self.status.order.as_ref().map(|o| o.url.clone()) else {
            return Err(Failure::new(C::Internal, "the attempt has no order URL").into());
        };
        Ok(order::load(account, &url).await?)
    }

    fn running_for(&self) -> SignedDuration {
        self.status.started_at.as_ref().map(|t| Timestamp::now().duration_since(t.0)).unwrap_or_default()
    }

    pub(super) fn timed_out(&self) -> bool {
        self.running_for() > ACME_ATTEMPT_TIMEOUT
    }

    /// Before any ACME phase: the attempt's time is not up, and it holds one of the issuer's
    /// order slots (or waits for one).
    pub(super) fn acme_guard(&self) -> Phase<()> {
        if self.timed_out() {
            return Err(Failure::new(
                C::Timeout,
                format!(
                    "the order did not complete within {ACME_ATTEMPT_TIMEOUT:#}; see the challenges for what the CA is still waiting on"
                ),
            )
            .into());
        }
        if self.ctx.order_slots.take(&self.issuer_key(), &self.namespace, &self.attempt.name_any()) {
            Ok(())
        } else {
            // Nothing to write: a restart finds the attempt where it was. It is woken when a
            // slot comes free for it (`Context::release_order_slot`); the poll is for slots
            // taken back from attempts that vanished.
            Err(Halt::Poll(Duration::from_secs(5)))
        }
    }

    /// The order URLs other attempts under way recorded (from the shared cache).
    pub(super) fn orders_of_other_attempts(&self) -> std::collections::HashSet<String> {
        let own = self.attempt.uid();
        let working = self.ctx.caches.working_attempts.state();
        let others = working.iter().filter(|a| a.uid() != own);
        others.filter_map(|a| Some(a.status.as_ref()?.order.as_ref()?.url.clone())).collect()
    }

    /// Polls the CA often at first, then less: a slow validation does not cost a request a second.
    pub(super) fn poll_interval(&self) -> Duration {
        poll_interval(self.running_for())
    }
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
