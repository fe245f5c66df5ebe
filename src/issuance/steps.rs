//! The step log of an attempt: each step with its phase and timings.

use crate::api::attempt::{Step, StepPhase};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[derive(Debug, Default, Clone)]
pub struct StepLog {
    pub steps: Vec<Step>,
}

impl StepLog {
    pub fn from(steps: Vec<Step>) -> Self {
        Self { steps }
    }

    /// Starts (or restarts, after a crash) the step `name`.
    pub fn begin(&mut self, name: &str) {
        self.steps.retain(|s| s.name != name);
        self.steps.push(Step {
            name: name.into(),
            phase: StepPhase::Running,
            started_at: Some(Time(Timestamp::now())),
            finished_at: None,
            message: String::new(),
        });
    }

    fn finish(&mut self, phase: StepPhase, message: String) {
        if let Some(step) = self.steps.iter_mut().rev().find(|s| s.phase == StepPhase::Running) {
            step.phase = phase;
            step.finished_at = Some(Time(Timestamp::now()));
            step.message = message;
        }
    }

    pub fn succeed(&mut self, message: impl Into<String>) {
        self.finish(StepPhase::Succeeded, message.into());
    }

    pub fn fail(&mut self, message: impl Into<String>) {
        self.finish(StepPhase::Failed, message.into());
    }

    /// Adds to the message of the last step (something the user should know, not a failure).
    pub fn note(&mut self, text: impl Into<String>) {
        if let Some(step) = self.steps.last_mut() {
            step.message = format!("{}; {}", step.message, text.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_record_phase_and_timing() {
        let mut log = StepLog::default();
        log.begin("GenerateKey");
        log.succeed("generated an ECDSA-256 key");
        log.begin("Sign");
        log.fail("CA expired");
        assert_eq!(log.steps.len(), 2);
        assert_eq!(log.steps[0].phase, StepPhase::Succeeded);
        assert!(log.steps[0].finished_at.is_some());
        assert_eq!((log.steps[1].phase, log.steps[1].message.as_str()), (StepPhase::Failed, "CA expired"));
        log.begin("Sign");
        assert_eq!(log.steps.len(), 2, "a restarted step replaces its earlier record");
    }
}
