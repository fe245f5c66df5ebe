use super::*;
use serde_json::json;

/// The lowercase rule of an Issuer's `solvers[].selector.dnsNames`.
const DNS_NAMES_RULE: &str =
    r"self.all(n, n.matches('^(\\*\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))";

/// A CRD of the conformance group with one version of schema `schema`.
fn crd(schema: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "costs.conformance.certpilot.dev"},
        "spec": {"group": "conformance.certpilot.dev", "scope": "Namespaced",
            "names": {"plural": "costs", "singular": "cost", "kind": "Cost", "listKind": "CostList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]
        }
    })
}

/// An Issuer's schema reduced to the shape of `spec.acme.solvers[].selector.dnsNames`.
fn issuer_crd(solvers: u64, names: u64) -> Value {
    let dns_names = json!({
        "type": "array", "maxItems": names, "items": {"type": "string", "maxLength": 253},
        "x-kubernetes-validations": [{"rule": DNS_NAMES_RULE, "message": "lowercase"}]
    });
    let solver = json!({"type": "object", "properties": {"selector": {"type": "object", "properties": {"dnsNames": dns_names}}}});
    let acme =
        json!({"type": "object", "properties": {"solvers": {"type": "array", "maxItems": solvers, "items": solver}}});
    crd(json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"acme": acme}}}}))
}

#[test]
fn the_old_issuer_selector_rule_is_over_budget_as_on_a_real_api_server() {
    let errors = crd_errors(&issuer_crd(50, 100), None);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "spec.validation.openAPIV3Schema.properties[spec].properties[acme].properties[solvers].items.properties[selector].properties[dnsNames].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of 1.073010x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        ]
    );
    // 50 solvers × (2 + 100 names × (4 + ⌈1013 × 0.1⌉ × ⌈82 × 0.25⌉)).
    assert_eq!(errors[0], CostError::Rule { field: errors[0].field().to_string(), cost: 10_730_100 });
}

#[test]
fn the_issuer_selector_rule_fits_with_fifty_names() {
    assert_eq!(crd_errors(&issuer_crd(50, 50), None), []);
}

/// A schema with a field of each kind the rules below read.
fn fields() -> Value {
    let name = json!({"type": "string", "maxLength": 20});
    json!({"type": "object", "properties": {
        "s": name, "u": {"type": "string"}, "e": {"type": "string", "enum": ["alpha", "beta"]},
        "i": {"type": "integer"}, "b": {"type": "boolean"},
        "d": {"type": "string", "format": "date-time"}, "ios": {"x-kubernetes-int-or-string": true},
        "l": {"type": "array", "maxItems": 5, "items": name}, "ul": {"type": "array", "items": {"type": "string"}},
        "ol": {"type": "array", "maxItems": 4, "items": {"type": "object", "required": ["name"],
            "properties": {"name": name, "v": {"type": "integer"}}}},
        "m": {"type": "object", "maxProperties": 3, "additionalProperties": name},
        "o": {"type": "object", "properties": {"a": name, "b": {"type": "object", "properties": {"c": name}}}},
        "ll": {"type": "array", "maxItems": 3, "items": {"type": "array", "maxItems": 4, "items": name}}
    }})
}

/// Costs a real kube-apiserver v1.36.2 gives these rules on [`fields`] (read off the factor it
/// reports for a rule repeated until it is over budget).
#[test]
fn rule_costs_are_those_of_a_real_api_server() {
    let cases = [
        ("self.s == self.u", 12),
        ("self.s < self.u", 12),
        ("self.i < 5 && self.i > 1", 6),
        ("!self.b || self.i == 1", 5),
        ("self.s + self.s == 'ab'", 21),
        ("size(self.s) < 3", 4),
        ("self.u.contains('abc')", 314_575),
        ("self.e.matches('^a')", 3),
        ("self.d < timestamp('2024-01-01T00:00:00Z')", 4),
        ("self.ios == 1 || self.ios == 'x'", 6),
        ("string(self.ios).size() < 3", 314_577),
        ("self.l.exists(x, x == 'a')", 33),
        ("self.l.exists_one(x, x == 'a')", 24),
        ("self.l.map(x, x + 'a').size() < 3", 125),
        ("self.l.filter(x, x.startsWith('a')).size() < 3", 90),
        ("self.l.map(x, x.size() > 1, x).size() < 3", 95),
        ("self.l[0] == 'a'", 4),
        ("'a' in self.l", 7),
        ("self.l.all(x, self.l.exists(y, x == y))", 383),
        ("self.ol.exists(o, has(o.v) && o.v > 1)", 35),
        ("self.m.all(k, self.m[k].size() < 3)", 30),
        ("self.m.exists(k, k == 'a')", 18),
        ("has(self.o.b.c)", 3),
        ("self.ll.all(l, l.all(x, x.size() < 3))", 90),
        ("isURL(self.u) && url(self.u).getHost() == 'x'", 314_580),
        ("isQuantity(self.s) && quantity(self.s).isGreaterThan(quantity('1'))", 22),
        ("ip(self.s).family() == 4", 12),
        ("isCIDR(self.s) && cidr(self.s).containsIP(self.u)", 314_599),
        ("self.u.split(',').size() < 3", 629_150),
        ("self.l.join(',').size() < 30", 45),
        ("self.s.replace('a','bb') == self.u", 36),
        ("self.l.isSorted()", 47),
        ("self.s.find('[a-z]+') == 'a'", 21),
        ("{'a': self.s}.all(k, k == 'a')", 37),
        ("(self.i == 1 ? self.s : self.u).size() < 3", 6),
        ("string(self.i) == self.s", 13),
        ("self.l + ['a'] == self.l", 16),
        ("duration(self.s) < duration(self.u)", 7),
        ("self.s.matches(self.u)", 7_077_892),
        ("self.ul.all(x, x.size() < 3)", 6_291_453),
        ("self.o == oldSelf.o", 4),
    ];
    let decl = decl_type(&fields(), false).unwrap();
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(rule, cost)| {
            let estimated = expression_cost(rule, &decl);
            (estimated != Some(*cost)).then(|| format!("{rule}: {estimated:?}, a real API server says {cost}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

/// A schema of the conformance group's shape whose `spec.<name>` properties are `lists`.
fn spec_crd(lists: Value) -> Value {
    crd(json!({"type": "object", "properties": {"spec": {"type": "object", "properties": lists}}}))
}

const MATCH_ALL: &str = "self.all(x, x.matches('^[a-z]+[0-9]*$'))";

fn strings(max_items: Option<u64>, max_length: u64, rules: usize) -> Value {
    let mut list = json!({"type": "array", "items": {"type": "string", "maxLength": max_length},
        "x-kubernetes-validations": vec![json!({"rule": MATCH_ALL}); rules]});
    if let Some(max) = max_items {
        list["maxItems"] = json!(max);
    }
    list
}

#[test]
fn rules_over_the_total_are_named_with_the_total_as_a_real_api_server_does() {
    let crd = spec_crd(json!({
        "a": strings(None, 100, 3), "b": strings(Some(1000), 1000, 2), "c": strings(Some(10), 10, 1)
    }));
    let rule = |list: &str, i: usize| {
        format!(
            "spec.validation.openAPIV3Schema.properties[spec].properties[{list}].x-kubernetes-validations[{i}].rule"
        )
    };
    let messages: Vec<String> = crd_errors(&crd, None).iter().map(ToString::to_string).collect();
    let advice = "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";
    let over =
        |i| format!("{}: Forbidden: estimated rule cost exceeds budget by factor of 17.6x {advice}", rule("a", i));
    let part = |list, i| {
        format!(
            "{}: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
            rule(list, i)
        )
    };
    // As a real kube-apiserver v1.36.2 words it for this CRD.
    assert_eq!(
        messages,
        [
            over(0),
            over(1),
            over(2),
            part("a", 0),
            part("a", 1),
            part("a", 2),
            part("b", 0),
            format!(
                "spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 5.3x {advice}"
            ),
        ]
    );
}

#[test]
fn versions_of_different_schemas_are_checked_each_at_its_own_path() {
    let mut two = spec_crd(json!({"l": strings(Some(3), 10, 1)}));
    let mut unbounded = two["spec"]["versions"][0].clone();
    unbounded["name"] = json!("v2");
    unbounded["storage"] = json!(false);
    unbounded["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["l"] = strings(None, 100, 1);
    two["spec"]["versions"].as_array_mut().unwrap().push(unbounded);
    let fields: Vec<String> = crd_errors(&two, None).iter().map(|e| e.field().to_string()).collect();
    let v2 = "spec.versions[1].schema.openAPIV3Schema";
    assert_eq!(
        fields,
        [
            format!("{v2}.properties[spec].properties[l].x-kubernetes-validations[0].rule"),
            format!("{v2}.properties[spec].properties[l].x-kubernetes-validations[0].rule"),
            v2.to_string()
        ]
    );
}

#[test]
fn under_unbounded_lists_a_rule_runs_as_often_as_its_values_fit_in_a_request() {
    // {"name":""} takes at least 12 bytes: 3 MiB / 13 objects, each matching a 63-character name.
    let objects = json!({"type": "array", "items": {"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "maxLength": 63}},
        "x-kubernetes-validations": [{"rule": "self.name.matches('^[a-z]+$')"}]}});
    let errors = crd_errors(&spec_crd(json!({"items": objects})), None);
    // As a real kube-apiserver v1.36.2 reports it.
    assert!(errors[0].message().contains("by factor of 1.306687x"), "{errors:?}");
}

#[test]
fn updates_that_keep_a_schema_are_not_refused_for_one_rule() {
    let crd = issuer_crd(50, 100);
    assert_eq!(crd_errors(&crd, Some(&crd)), []);
    assert_eq!(crd_errors(&crd, Some(&issuer_crd(50, 50))).len(), 1);
}

#[test]
fn the_budget_factor_is_worded_as_the_api_server_words_it() {
    let message = |cost| CostError::Rule { field: "f".into(), cost }.message();
    assert!(message(10_730_100).contains("by factor of 1.073010x"));
    assert!(message(176_000_000).contains("by factor of 17.6x"));
    assert!(message(1_000_000_001).contains("by factor of more than 100x"));
}
