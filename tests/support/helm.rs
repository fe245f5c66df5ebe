//! Renders the Helm chart (`charts/certpilot`) without Helm: Go's text/template (the `gotmpl`
//! crate) with minimal versions of the Helm functions the chart uses (the subset listed at the
//! top of `templates/_helpers.tpl`), values merged over `values.yaml` as Helm merges them, and
//! `values.schema.json` checked as Helm checks it.

use gotmpl::{MissingKey, Template, TemplateError, Value as Tmpl};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

/// Where the chart is installed.
pub struct Release<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/certpilot")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_file(name: &str) -> Value {
    yaml_serde::from_str(&read(&chart_dir().join(name))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `values.yaml` with `overrides` merged in, as `helm install -f overrides.yaml` would: maps
/// merge key by key, anything else replaces, and null removes a default (an RFC 7386 merge).
pub fn values(overrides: &Value) -> Value {
    let mut values = yaml_file("values.yaml");
    json_patch::merge(&mut values, overrides);
    values
}

/// The errors of `values` against `values.schema.json`, one line each (empty when valid).
pub fn schema_errors(values: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("values.schema.json is a draft-07 schema");
    validator.iter_errors(values).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// Each template file's output, by file name (`_helpers.tpl` only defines, and is left out).
pub fn render(release: &Release, values: &Value) -> Vec<(String, String)> {
    let errors = schema_errors(values);
    assert!(errors.is_empty(), "the values do not fit values.schema.json: {errors:#?}");
    let chart = yaml_file("Chart.yaml");
    let data = gotmpl::to_value(&json!({
        "Values": values,
        "Release": {"Name": release.name, "Namespace": release.namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    }))
    .unwrap();
    let helpers = read(&chart_dir().join("templates/_helpers.tpl"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = template(&name, &helpers, &read(path))
                .and_then(|t| t.execute_to_string(&data))
                .unwrap_or_else(|e| panic!("templates/{name}: {e}"));
            (name, text)
        })
        .collect()
}

/// The rendered Kubernetes objects, in template file order (empty documents left out).
pub fn objects(release: &Release, values: &Value) -> Vec<Value> {
    render(release, values).iter().flat_map(|(name, text)| documents(name, text)).collect()
}

/// The YAML documents of one rendered file.
pub fn documents(name: &str, text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("templates/{name} renders bad YAML: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// One template file, parsed with the helpers' definitions and Helm's functions.
fn template(name: &str, helpers: &str, source: &str) -> Result<Template, TemplateError> {
    // `include` runs a definition of the helpers: a template of its own, made once the
    // functions it may call exist.
    let defined: Arc<OnceLock<Template>> = Arc::default();
    let with_functions = |t: Template| helm_functions(t, defined.clone()).missing_key(MissingKey::Error);
    let _ = defined.set(with_functions(Template::new("_helpers.tpl")).parse(helpers)?);
    with_functions(Template::new(name)).parse(helpers)?.parse(source)
}

fn helm_functions(template: Template, defined: Arc<OnceLock<Template>>) -> Template {
    template
        .func("include", move |args| include(&defined, args))
        .func("default", |args| Ok(default(args)))
        .func("quote", |args| Ok(Tmpl::String(quote(args).into())))
        .func("toYaml", |args| to_yaml(arg(args, 0)?))
        .func("nindent", nindent)
        .func("int", |args| int(arg(args, 0)?))
}

fn arg(args: &[Tmpl], i: usize) -> Result<&Tmpl, TemplateError> {
    args.get(i).ok_or_else(|| TemplateError::Exec(format!("missing argument {}", i + 1)))
}

fn text(value: &Tmpl) -> String {
    match value {
        Tmpl::String(s) => s.to_string(),
        Tmpl::Nil => String::new(),
        other => other.to_string(),
    }
}

/// `include NAME DATA`: the named definition's output, as a string for further pipes.
fn include(defined: &OnceLock<Template>, args: &[Tmpl]) -> Result<Tmpl, TemplateError> {
    let name = text(arg(args, 0)?);
    let helpers = defined.get().ok_or_else(|| TemplateError::Exec("include inside _helpers.tpl".into()))?;
    Ok(Tmpl::String(helpers.execute_template_to_string(&name, arg(args, 1)?)?.into()))
}

/// `default FALLBACK VALUE`: VALUE unless it is empty (Go's zero values, empty lists and maps).
fn default(args: &[Tmpl]) -> Tmpl {
    match args {
        [fallback] => fallback.clone(),
        [_, value] if gotmpl::is_true(value) => value.clone(),
        [fallback, ..] => fallback.clone(),
        [] => Tmpl::Nil,
    }
}

/// `quote A B …`: each argument as a double-quoted string (JSON's escapes are Go's for text).
fn quote(args: &[Tmpl]) -> String {
    args.iter().map(|a| serde_json::to_string(&text(a)).expect("strings serialize")).collect::<Vec<_>>().join(" ")
}

/// `toYaml VALUE`: YAML without the final newline, as Helm writes it.
fn to_yaml(value: &Tmpl) -> Result<Tmpl, TemplateError> {
    let yaml = yaml_serde::to_string(&to_json(value)?).map_err(|e| TemplateError::Exec(e.to_string()))?;
    Ok(Tmpl::String(yaml.trim_end_matches('\n').into()))
}

/// `nindent N TEXT`: a newline, then TEXT with every line indented by N spaces.
fn nindent(args: &[Tmpl]) -> Result<Tmpl, TemplateError> {
    let width = usize::try_from(arg(args, 0)?.as_int().unwrap_or(-1))
        .map_err(|_| TemplateError::Exec("nindent needs a width".into()))?;
    let pad = " ".repeat(width);
    let indented: Vec<String> = text(arg(args, 1)?).lines().map(|l| format!("{pad}{l}")).collect();
    Ok(Tmpl::String(format!("\n{}", indented.join("\n")).into()))
}

/// `int VALUE`: a number as an integer (Helm's values are float64, which `gt` will not compare with 1).
fn int(value: &Tmpl) -> Result<Tmpl, TemplateError> {
    match value {
        Tmpl::Int(_) => Ok(value.clone()),
        Tmpl::Uint(u) => Ok(Tmpl::Int(i64::try_from(*u).unwrap_or(i64::MAX))),
        Tmpl::Float(f) => Ok(Tmpl::Int(*f as i64)),
        Tmpl::String(s) => s.parse().map(Tmpl::Int).map_err(|_| TemplateError::Exec(format!("int: {s:?}"))),
        other => Err(TemplateError::Exec(format!("int: {other}"))),
    }
}

/// The template value as JSON, for serializers.
fn to_json(value: &Tmpl) -> Result<Value, TemplateError> {
    Ok(match value {
        Tmpl::Nil => Value::Null,
        Tmpl::Bool(b) => json!(b),
        Tmpl::Int(i) => json!(i),
        Tmpl::Uint(u) => json!(u),
        Tmpl::Float(f) => json!(f),
        Tmpl::String(s) => json!(s.as_ref()),
        Tmpl::List(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Tmpl::Map(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.to_string(), to_json(v)?))).collect::<Result<_, TemplateError>>()?,
        ),
        Tmpl::Function(_) => return Err(TemplateError::Exec("a function has no YAML".into())),
    })
}

/// The chart's CRDs (`crds/`), which Helm installs before the templates.
pub fn crds() -> Vec<Value> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(chart_dir().join("crds")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().flat_map(|f| documents(&f.display().to_string(), &read(f))).collect()
}

/// The value sets the chart is tested with, by what they exercise.
pub fn value_sets() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        ("watchNamespace", json!({"watchNamespace": "default"})),
        ("one replica, no budget nor spread", json!({"replicaCount": 1})),
        (
            "monitoring and network policy",
            json!({
                "metrics": {
                    "serviceMonitor": {"enabled": true, "interval": "1m", "labels": {"release": "prometheus"}},
                    "prometheusRule": {"enabled": true, "labels": {"release": "prometheus"}},
                },
                "networkPolicy": {
                    "enabled": true,
                    "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                    "extraEgress": [{"ports": [{"port": 14000, "protocol": "TCP"}]}],
                },
            }),
        ),
        ("no admission policy", json!({"admissionPolicy": {"enabled": false}})),
        ("cert-manager's annotations", json!({"shim": {"acceptCertManagerAnnotations": true}})),
        (
            "IRSA for Issuers",
            json!({"issuerAmbientCredentials": true,
                   "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/dns"}}}),
        ),
    ]
}
