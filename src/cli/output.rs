//! What the user commands (`status`, `renew`, `attempts`, `inspect`) share: where they look
//! (kubeconfig, namespace), how they print (for people, or `-o json|yaml` for scripts), colour
//! only on a terminal, and times in words.

use anstyle::{AnsiColor, Style};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use std::io::IsTerminal;

/// `-n`, `-A` and `-o`, as kubectl spells them (so `kubectl certpilot` reads like kubectl).
#[derive(clap::Args, Debug, Clone)]
pub struct Scope {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output: for people by default, or `json` / `yaml` for scripts.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// A client for the kubeconfig's current context, and the namespace the command works in.
pub struct Cluster {
    pub client: kube::Client,
    /// `None` with `-A`.
    pub namespace: Option<String>,
}

impl Cluster {
    pub async fn connect(scope: &Scope) -> anyhow::Result<Self> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = kube::Config::infer().await.map_err(|_| super::controller::no_cluster())?;
        let namespace = match (scope.all_namespaces, &scope.namespace) {
            (true, _) => None,
            (false, Some(namespace)) => Some(namespace.clone()),
            (false, None) => Some(config.default_namespace.clone()),
        };
        Ok(Self { client: crate::outbound::kube_client(config)?, namespace })
    }

    /// The namespace of a command about one named object (`-A` makes no sense there).
    pub fn one_namespace(&self) -> anyhow::Result<&str> {
        self.namespace.as_deref().ok_or_else(|| anyhow::anyhow!("-A lists many; name a namespace with -n instead"))
    }

    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => kube::Api::namespaced(self.client.clone(), namespace),
            None => kube::Api::all(self.client.clone()),
        }
    }
}

/// Prints `value` as the user asked: JSON or YAML for scripts, or `human` for people.
pub fn print<T: Serialize>(format: Option<Format>, value: &T, human: impl FnOnce() -> String) -> anyhow::Result<()> {
    match format {
        Some(Format::Json) => println!("{}", serde_json::to_string_pretty(value)?),
        Some(Format::Yaml) => print!("{}", yaml_serde::to_string(value)?),
        None => print!("{}", human()),
    }
    Ok(())
}

/// Styles for people's output; all plain when stdout is not a terminal or `NO_COLOR` is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Palette {
    pub good: Style,
    pub bad: Style,
    pub busy: Style,
    pub strong: Style,
}

impl Palette {
    pub fn for_stdout() -> Self {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        if colour { Self::coloured() } else { Self::default() }
    }

    pub fn coloured() -> Self {
        Self {
            good: AnsiColor::Green.on_default(),
            bad: AnsiColor::Red.on_default().bold(),
            busy: AnsiColor::Yellow.on_default(),
            strong: Style::new().bold(),
        }
    }

    /// `text` in `style` (`style` then reset; nothing added when the style is plain).
    pub fn paint(style: Style, text: &str) -> String {
        if style == Style::new() { text.to_string() } else { format!("{style}{text}{style:#}") }
    }
}

/// `2027-02-27T02:43:10Z (in 90d)`, `2026-11-28T10:00:00Z (3h ago)`, or `-`.
pub fn when(time: Option<&Time>, now: Timestamp) -> String {
    match time {
        Some(time) => format!("{} ({})", time.0, relative(time.0, now)),
        None => "-".into(),
    }
}

/// `in 90d`, `3h ago`, `now`: the largest whole unit, as kubectl words ages.
pub fn relative(time: Timestamp, now: Timestamp) -> String {
    let seconds = time.as_second() - now.as_second();
    let span = seconds.unsigned_abs();
    let words = match span {
        0 => return "now".into(),
        1..=119 => format!("{span}s"),
        120..=7_199 => format!("{}m", span / 60),
        7_200..=172_799 => format!("{}h", span / 3_600),
        _ => format!("{}d", span / 86_400),
    };
    if seconds > 0 { format!("in {words}") } else { format!("{words} ago") }
}

/// How long a step or attempt took: `0.42s`, `12s`, `3m4s`.
pub fn took(from: &Time, to: &Time) -> String {
    let millis = to.0.as_millisecond() - from.0.as_millisecond();
    match millis {
        ..0 => "-".into(),
        0..10_000 => format!("{:.2}s", millis as f64 / 1000.0),
        10_000..120_000 => format!("{}s", millis / 1000),
        _ => format!("{}m{}s", millis / 60_000, (millis % 60_000) / 1000),
    }
}

/// Lays out rows under headers, each column as wide as its widest cell (kubectl's style).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}", width = width)).collect();
        format!("{}\n", padded.join("   ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_use_the_largest_whole_unit() {
        let now: Timestamp = "2026-11-28T00:00:00Z".parse().unwrap();
        let at = |offset: i64| Timestamp::from_second(now.as_second() + offset).unwrap();
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(at(45), now), "in 45s");
        assert_eq!(relative(at(-45), now), "45s ago");
        assert_eq!(relative(at(600), now), "in 10m");
        assert_eq!(relative(at(-3 * 3600), now), "3h ago");
        assert_eq!(relative(at(90 * 86_400), now), "in 90d");
    }

    #[test]
    fn durations_read_at_a_glance() {
        let t = |s: &str| Time(s.parse().unwrap());
        assert_eq!(took(&t("2026-01-01T00:00:00Z"), &t("2026-01-01T00:00:00.420Z")), "0.42s");
        assert_eq!(took(&t("2026-01-01T00:00:00Z"), &t("2026-01-01T00:00:12Z")), "12s");
        assert_eq!(took(&t("2026-01-01T00:00:00Z"), &t("2026-01-01T00:03:04Z")), "3m4s");
    }

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["NAME", "PHASE"],
            &[vec!["web".into(), "Ready".into()], vec!["a-long-name".into(), "Failed".into()]],
        );
        assert_eq!(out, "NAME          PHASE\nweb           Ready\na-long-name   Failed\n");
    }

    #[test]
    fn plain_palettes_add_nothing() {
        assert_eq!(Palette::paint(Palette::default().bad, "Failed"), "Failed");
        assert_ne!(Palette::paint(Palette::coloured().bad, "Failed"), "Failed");
    }
}
