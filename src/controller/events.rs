//! Kubernetes Events about certpilot's objects (what `kubectl describe` shows).
//!
//! Not kube-runtime's `Recorder`: it keeps every Event it published for six minutes, to fold
//! repeats into a series. certpilot's Events each name an attempt, so they never repeat, and
//! that cache held ~4 KiB of the operator's memory per certificate issued in the last minutes.

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};

/// The reporting controller named in every Event.
const CONTROLLER: &str = "certpilot";
/// An Event's note is at most this long (the API server's limit is 1 KiB).
const NOTE_LIMIT: usize = 1000;

/// What one Event says.
pub struct Note<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub action: &'a str,
    pub text: String,
}

/// Publishes Events; a publisher per process.
pub struct Events {
    client: Client,
    /// This replica (the Pod's name), or the controller's name.
    instance: String,
}

impl Events {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self { client, instance: instance.unwrap_or_else(|| CONTROLLER.into()) }
    }

    /// Creates the Event about `regarding` in its namespace.
    pub async fn publish(&self, regarding: &ObjectReference, note: Note<'_>) -> kube::Result<()> {
        let event = build(regarding, note, &self.instance, jiff::Timestamp::now());
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        Api::<Event>::namespaced(self.client.clone(), namespace).create(&PostParams::default(), &event).await?;
        Ok(())
    }
}

/// The Event: in the namespace of what it regards, named after it and the moment.
fn build(regarding: &ObjectReference, note: Note<'_>, instance: &str, now: jiff::Timestamp) -> Event {
    let subject = regarding.name.as_deref().unwrap_or(CONTROLLER);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{subject}.{:x}", now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(note.reason.into()),
        action: Some(note.action.into()),
        note: Some(note.text.chars().take(NOTE_LIMIT).collect()),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_regards_its_object_in_its_namespace() {
        let regarding = ObjectReference {
            kind: Some("Certificate".into()),
            name: Some("web".into()),
            namespace: Some("apps".into()),
            ..Default::default()
        };
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let note = Note { warning: true, reason: "AttemptFailed", action: "Issue", text: "x".repeat(1500) };
        let event = build(&regarding, note, "certpilot-0", now);
        assert_eq!(event.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(event.metadata.name, Some(format!("web.{:x}", now.as_nanosecond())));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some("AttemptFailed"));
        assert_eq!(event.action.as_deref(), Some("Issue"));
        assert_eq!(event.note.unwrap().len(), NOTE_LIMIT);
        assert_eq!(event.regarding, Some(regarding));
        assert_eq!(event.reporting_controller.as_deref(), Some("certpilot"));
        assert_eq!(event.reporting_instance.as_deref(), Some("certpilot-0"));
        assert_eq!(event.event_time, Some(MicroTime(now)));
    }
}
