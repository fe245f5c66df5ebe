//! The static cost estimate of one CEL expression, as cel-go's `checker/cost.go` computes it
//! with the Kubernetes estimator (`apiserver/pkg/cel/library/cost.go`) and size estimator
//! (`apiextensions-apiserver/pkg/apiserver/schema/cel/compilation.go`) the API server plugs in.
//!
//! The `cel` parser expands the macros (`all`, `exists`, `exists_one`, `map`, `filter`) into
//! comprehensions as cel-go does, so their costs come out of the same arithmetic. cel-go costs a
//! type-checked expression; the types it needs (which overload a call is, whether a selection
//! reads a field) are inferred here from the schema as the estimate goes.

use super::decl::{DeclKind, DeclType};
use cel::{
    IdedExpr,
    common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, ListExpr, LiteralValue, MapExpr, SelectExpr},
};
use std::collections::{BTreeMap, HashMap};

/// A `[min, max]` range: of costs, or of sizes (characters, bytes, items or entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub min: u64,
    pub max: u64,
}

/// cel-go's cost units (`common/cost.go`).
const SELECT_AND_IDENT_COST: u64 = 1;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;
const STRUCT_CREATE_BASE_COST: u64 = 40;
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// What Kubernetes charges an authorization check.
const AUTHZ_CHECK_COST: u64 = 350_000;
/// The accumulator variable of the comprehensions macros expand into.
const ACCUMULATOR: &str = "@result";

impl Estimate {
    const ZERO: Self = Self::fixed(0);
    const UNKNOWN: Self = Self { min: 0, max: u64::MAX };

    const fn fixed(n: u64) -> Self {
        Self { min: n, max: n }
    }

    fn add(self, other: Self) -> Self {
        Self { min: self.min.saturating_add(other.min), max: self.max.saturating_add(other.max) }
    }

    fn multiply(self, other: Self) -> Self {
        Self { min: self.min.saturating_mul(other.min), max: self.max.saturating_mul(other.max) }
    }

    /// Each bound times `factor`, rounded up (cel-go's `MultiplyByCostFactor`).
    fn times(self, factor: f64) -> Self {
        Self { min: times(self.min, factor), max: times(self.max, factor) }
    }

    fn union(self, other: Self) -> Self {
        Self { min: self.min.min(other.min), max: self.max.max(other.max) }
    }
}

fn times(n: u64, factor: f64) -> u64 {
    let product = (n as f64 * factor).ceil();
    if product >= u64::MAX as f64 { u64::MAX } else { product as u64 }
}

/// The type of an expression, as far as costs depend on it.
#[derive(Debug, Clone, PartialEq)]
enum Type<'a> {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Duration,
    Timestamp,
    List(Box<Type<'a>>),
    Map(Box<Type<'a>>, Box<Type<'a>>),
    /// A schema object: its fields.
    Object(&'a BTreeMap<String, DeclType>),
    /// A Kubernetes library type: `url`, `ip`, `cidr`, `quantity`, `semver`.
    Opaque(Library),
    Dyn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Library {
    Url,
    Ip,
    Cidr,
    Quantity,
    Semver,
}

impl<'a> Type<'a> {
    fn of(decl: &'a DeclType) -> Self {
        match &decl.kind {
            DeclKind::Object(fields) => Type::Object(fields),
            DeclKind::List(elem) => Type::List(Box::new(Type::of(elem))),
            DeclKind::Map(value) => Type::Map(Box::new(Type::String), Box::new(Type::of(value))),
            DeclKind::String => Type::String,
            DeclKind::Bytes => Type::Bytes,
            DeclKind::Duration => Type::Duration,
            DeclKind::Timestamp => Type::Timestamp,
            DeclKind::Int => Type::Int,
            DeclKind::Double => Type::Double,
            DeclKind::Bool => Type::Bool,
            DeclKind::IntOrString => Type::Dyn,
        }
    }

    /// Values of a fixed size (cel-go's `isScalar`).
    fn is_scalar(&self) -> bool {
        matches!(self, Type::Bool | Type::Int | Type::Uint | Type::Double | Type::Duration | Type::Timestamp)
    }

    fn element(&self) -> Type<'a> {
        match self {
            Type::List(elem) => (**elem).clone(),
            Type::Map(key, _) => (**key).clone(),
            _ => Type::Dyn,
        }
    }

    fn is_dyn_container(&self) -> bool {
        matches!(self, Type::List(e) if **e == Type::Dyn)
            || matches!(self, Type::Map(k, v) if **k == Type::Dyn && **v == Type::Dyn)
    }
}

/// Which overload of a function a call is, where its cost depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overload {
    LogicalAnd,
    LogicalOr,
    Conditional,
    /// `==` and `!=` of any type, `<`, `<=`, `>`, `>=` of strings or bytes.
    Comparison,
    InList,
    IndexList,
    IndexMap,
    AddString,
    AddBytes,
    AddList,
    StringToBytes,
    BytesToString,
    MatchesString,
    StartsOrEndsWith,
    ContainsString,
    /// `ip()` of a CIDR.
    CidrIp,
    /// `containsIP`/`containsCIDR` of a string, parsed first.
    ContainsOfString,
    Other,
}

/// Whether a container is a list or a map, and the sizes of its keys (indexes) and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntrySize {
    list: bool,
    key: Estimate,
    value: Estimate,
}

impl EntrySize {
    fn union(self, other: Self) -> Self {
        Self { list: self.list, key: self.key.union(other.key), value: self.value.union(other.value) }
    }
}

/// A variable a comprehension binds: where its values come from (for size estimates).
#[derive(Debug, Clone)]
struct Local<'a> {
    path: Vec<String>,
    size: Option<Estimate>,
    entry: Option<EntrySize>,
    ty: Type<'a>,
}

/// A call's cost, and the size of its result when the function knows it.
struct CallEstimate {
    cost: Estimate,
    result_size: Option<Estimate>,
}

impl CallEstimate {
    fn cost(cost: Estimate) -> Self {
        Self { cost, result_size: None }
    }
}

/// The estimated cost of `expr` evaluated with `self` (and `oldSelf`) of type `root`.
pub fn cost(expr: &IdedExpr, root: &DeclType) -> Estimate {
    Coster::new(root).cost(expr)
}

struct Coster<'a> {
    root: &'a DeclType,
    /// Where an expression's value comes from: a variable, then field names, `@items`,
    /// `@values` or `@keys`.
    paths: HashMap<u64, Vec<String>>,
    sizes: HashMap<u64, Estimate>,
    entry_sizes: HashMap<u64, EntrySize>,
    types: HashMap<u64, Type<'a>>,
    locals: HashMap<String, Vec<Local<'a>>>,
}

impl<'a> Coster<'a> {
    fn new(root: &'a DeclType) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            sizes: HashMap::new(),
            entry_sizes: HashMap::new(),
            types: HashMap::new(),
            locals: HashMap::new(),
        }
    }

    fn cost(&mut self, e: &IdedExpr) -> Estimate {
        let (cost, ty) = match &e.expr {
            Expr::Literal(literal) => (Estimate::ZERO, literal_type(literal)),
            Expr::Ident(name) => self.cost_ident(e.id, name),
            Expr::Select(select) => self.cost_select(e.id, select),
            Expr::Call(call) => self.cost_call(e, call),
            Expr::List(list) => self.cost_list(e.id, list),
            Expr::Map(map) => self.cost_map(e.id, map),
            Expr::Struct(object) => {
                let fields = object.entries.iter().filter_map(|entry| match &entry.expr {
                    EntryExpr::StructField(field) => Some(&field.value),
                    EntryExpr::MapEntry(_) => None,
                });
                let sum = fields.fold(Estimate::ZERO, |sum, value| sum.add(self.cost(value)));
                (sum.add(Estimate::fixed(STRUCT_CREATE_BASE_COST)), Type::Dyn)
            }
            Expr::Comprehension(comprehension) => self.cost_comprehension(e.id, comprehension),
            Expr::Unspecified => (Estimate::ZERO, Type::Dyn),
        };
        self.types.insert(e.id, ty);
        cost
    }

    fn type_of(&self, e: &IdedExpr) -> Type<'a> {
        self.types.get(&e.id).cloned().unwrap_or(Type::Dyn)
    }

    fn local(&self, name: &str) -> Option<&Local<'a>> {
        self.locals.get(name).and_then(|stack| stack.last())
    }

    fn push_local(&mut self, name: &str, local: Local<'a>) {
        self.locals.entry(name.to_string()).or_default().push(local);
    }

    fn pop_local(&mut self, name: &str) {
        if let Some(stack) = self.locals.get_mut(name) {
            stack.pop();
        }
    }

    fn cost_ident(&mut self, id: u64, name: &str) -> (Estimate, Type<'a>) {
        let (path, ty) = match self.local(name) {
            Some(local) => (local.path.clone(), local.ty.clone()),
            None if name == "self" || name == "oldSelf" => (vec![name.to_string()], Type::of(self.root)),
            None => (vec![name.to_string()], Type::Dyn),
        };
        self.paths.insert(id, path);
        (Estimate::fixed(SELECT_AND_IDENT_COST), ty)
    }

    fn cost_select(&mut self, id: u64, select: &SelectExpr) -> (Estimate, Type<'a>) {
        let operand = self.cost(&select.operand);
        if select.test {
            // Kubernetes keeps `has()` free (cel-go's `PresenceTestHasCost(false)`).
            return (operand, Type::Bool);
        }
        let operand_type = self.type_of(&select.operand);
        let (field_cost, ty) = match &operand_type {
            Type::Object(fields) => (SELECT_AND_IDENT_COST, fields.get(&select.field).map_or(Type::Dyn, Type::of)),
            Type::Map(_, value) => (SELECT_AND_IDENT_COST, (**value).clone()),
            _ => (0, Type::Dyn),
        };
        let mut path = self.path_of(&select.operand);
        path.push(select.field.clone());
        self.paths.insert(id, path);
        (operand.add(Estimate::fixed(field_cost)), ty)
    }

    fn cost_list(&mut self, id: u64, list: &ListExpr) -> (Estimate, Type<'a>) {
        let mut sum = Estimate::ZERO;
        let mut item_size = if list.elements.is_empty() { Estimate::ZERO } else { Estimate { min: u64::MAX, max: 0 } };
        let mut item_type = Type::Dyn;
        for element in &list.elements {
            sum = sum.add(self.cost(element));
            item_size = item_size.union(self.size_or_unknown(element));
            if item_type == Type::Dyn {
                item_type = self.type_of(element);
            }
        }
        self.entry_sizes.insert(id, EntrySize { list: true, key: Estimate::fixed(1), value: item_size });
        (sum.add(Estimate::fixed(LIST_CREATE_BASE_COST)), Type::List(Box::new(item_type)))
    }

    fn cost_map(&mut self, id: u64, map: &MapExpr) -> (Estimate, Type<'a>) {
        let mut sum = Estimate::ZERO;
        let empty = if map.entries.is_empty() { Estimate::ZERO } else { Estimate { min: u64::MAX, max: 0 } };
        let (mut key_size, mut value_size) = (empty, empty);
        let (mut key_type, mut value_type) = (Type::Dyn, Type::Dyn);
        for entry in &map.entries {
            let EntryExpr::MapEntry(entry) = &entry.expr else { continue };
            sum = sum.add(self.cost(&entry.key)).add(self.cost(&entry.value));
            key_size = key_size.union(self.size_or_unknown(&entry.key));
            value_size = value_size.union(self.size_or_unknown(&entry.value));
            if key_type == Type::Dyn {
                (key_type, value_type) = (self.type_of(&entry.key), self.type_of(&entry.value));
            }
        }
        self.entry_sizes.insert(id, EntrySize { list: false, key: key_size, value: value_size });
        let ty = Type::Map(Box::new(key_type), Box::new(value_type));
        (sum.add(Estimate::fixed(MAP_CREATE_BASE_COST)), ty)
    }

    /// A macro: the range, the initial accumulator and the result once, the loop condition and
    /// step once per element of the range.
    fn cost_comprehension(&mut self, id: u64, c: &ComprehensionExpr) -> (Estimate, Type<'a>) {
        if is_bind(c) {
            return self.cost_bind(id, c);
        }
        let mut sum = self.cost(&c.iter_range).add(self.cost(&c.accu_init));
        let accu_type = self.type_of(&c.accu_init);
        self.push_local_var(&c.accu_var, &c.accu_init, accu_type.clone());
        match &c.iter_var2 {
            Some(value_var) => {
                self.push_iter_var(&c.iter_var, &c.iter_range, IterVar::Key);
                self.push_iter_var(value_var, &c.iter_range, IterVar::Value);
            }
            None => self.push_iter_var(&c.iter_var, &c.iter_range, IterVar::Single),
        }
        let loop_cost = self.cost(&c.loop_cond);
        let step_cost = self.cost(&c.loop_step);
        // `map` and `filter` start from `[]`: what they build is what the step appends.
        let step_type = self.type_of(&c.loop_step);
        if accu_type.is_dyn_container()
            && matches!(step_type, Type::List(_) | Type::Map(..))
            && let Some(accumulator) = self.locals.get_mut(&c.accu_var).and_then(|stack| stack.last_mut())
        {
            accumulator.ty = step_type;
        }
        self.pop_local(&c.iter_var);
        if let Some(value_var) = &c.iter_var2 {
            self.pop_local(value_var);
        }
        sum = sum.add(self.cost(&c.result));
        let ty = self.type_of(&c.result);
        self.pop_local(&c.accu_var);
        let range_count = self.size_or_unknown(&c.iter_range);
        sum = sum.add(range_count.multiply(step_cost.add(loop_cost)));
        match &c.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(size) = self.compute_size(&c.accu_init) {
                    self.sizes.insert(id, size);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.sizes.insert(id, range_count);
                if let Some(entry) = self.entry_size_of(&c.loop_step) {
                    self.entry_sizes.insert(id, entry);
                }
            }
            _ => {}
        }
        (sum, ty)
    }

    /// `cel.bind(name, value, expression)`: the value once, then the expression.
    fn cost_bind(&mut self, id: u64, c: &ComprehensionExpr) -> (Estimate, Type<'a>) {
        let mut sum = self.cost(&c.iter_range).add(self.cost(&c.accu_init));
        let ty = self.type_of(&c.accu_init);
        self.push_local_var(&c.accu_var, &c.accu_init, ty);
        sum = sum.add(self.cost(&c.result));
        self.pop_local(&c.accu_var);
        self.copy_sizes(id, &c.result);
        (sum, self.type_of(&c.result))
    }

    fn push_local_var(&mut self, name: &str, value: &IdedExpr, ty: Type<'a>) {
        let local =
            Local { path: self.path_of(value), size: self.compute_size(value), entry: self.entry_size_of(value), ty };
        self.push_local(name, local);
    }

    fn push_iter_var(&mut self, name: &str, range: &IdedExpr, role: IterVar) {
        let entry = self.entry_size_of(range);
        let range_type = self.type_of(range);
        let list = entry.map(|e| e.list).unwrap_or(matches!(range_type, Type::List(_)));
        let (size, step, ty) = match (role, list) {
            (IterVar::Single | IterVar::Value, true) => (entry.map(|e| e.value), "@items", range_type.element()),
            (IterVar::Key, true) => (entry.map(|e| e.key), "@indices", Type::Int),
            (IterVar::Single | IterVar::Key, false) => (entry.map(|e| e.key), "@keys", range_type.element()),
            (IterVar::Value, false) => {
                let value_type = match &range_type {
                    Type::Map(_, value) => (**value).clone(),
                    _ => Type::Dyn,
                };
                (entry.map(|e| e.value), "@values", value_type)
            }
        };
        let mut path = self.path_of(range);
        path.push(step.to_string());
        self.push_local(name, Local { path, size, entry: None, ty });
    }

    fn cost_call(&mut self, e: &IdedExpr, call: &CallExpr) -> (Estimate, Type<'a>) {
        if call.func_name == "dyn" && call.target.is_none() && call.args.len() == 1 {
            let cost = self.cost(&call.args[0]);
            self.copy_sizes(e.id, &call.args[0]);
            return (Estimate::fixed(1).add(cost), Type::Dyn);
        }
        let arg_costs: Vec<Estimate> = call.args.iter().map(|arg| self.cost(arg)).collect();
        let target_cost = call.target.as_deref().map_or(Estimate::ZERO, |target| self.cost(target));
        let ty = self.result_type(call);
        self.types.insert(e.id, ty.clone());
        // A call on `dyn` values may be any of several overloads: it costs what any of them may.
        let mut function_cost = Estimate { min: u64::MAX, max: 0 };
        let mut result_size: Option<Estimate> = None;
        for overload in self.overloads(call) {
            let estimate = self.function_cost(e.id, call, overload, &arg_costs);
            function_cost = function_cost.union(estimate.cost);
            if let Some(size) = estimate.result_size {
                result_size = Some(result_size.map_or(size, |known| known.union(size)));
            }
            if let (Overload::IndexList | Overload::IndexMap, Some(container)) = (overload, call.args.first()) {
                result_size = self.entry_size_of(container).map(|entry| entry.value);
                let mut path = self.path_of(container);
                path.push(if overload == Overload::IndexList { "@items" } else { "@values" }.to_string());
                self.paths.insert(e.id, path);
            }
            if result_size.is_none() {
                result_size = self.compute_size(e);
            }
        }
        if let Some(size) = result_size {
            self.sizes.insert(e.id, size);
        }
        (target_cost.add(function_cost), ty)
    }

    fn function_cost(&mut self, id: u64, call: &CallExpr, overload: Overload, arg_costs: &[Estimate]) -> CallEstimate {
        let args_sum = arg_costs.iter().fold(Estimate::ZERO, |sum, cost| sum.add(*cost));
        if let Some(estimate) = self.kubernetes_cost(call, overload) {
            return CallEstimate { cost: estimate.cost.add(args_sum), result_size: estimate.result_size };
        }
        let args = &call.args;
        let target = call.target.as_deref();
        match (overload, target, args.as_slice()) {
            (Overload::StartsOrEndsWith, Some(_), [prefix]) => {
                CallEstimate::cost(self.size_or_unknown(prefix).times(STRING_TRAVERSAL_COST_FACTOR).add(args_sum))
            }
            (Overload::InList, _, [_, list]) => CallEstimate::cost(self.size_or_unknown(list).add(args_sum)),
            (Overload::MatchesString, Some(text), [regex]) => {
                // Every character of the text against every (guessed four-character) step of the regex.
                let text_cost = self.size_or_unknown(text).add(Estimate::fixed(1)).times(STRING_TRAVERSAL_COST_FACTOR);
                let regex_cost = self.size_or_unknown(regex).times(REGEX_STRING_LENGTH_COST_FACTOR);
                CallEstimate::cost(text_cost.multiply(regex_cost).add(args_sum))
            }
            (Overload::ContainsString, Some(text), [part]) => {
                let text_cost = self.size_or_unknown(text).times(STRING_TRAVERSAL_COST_FACTOR);
                let part_cost = self.size_or_unknown(part).times(STRING_TRAVERSAL_COST_FACTOR);
                CallEstimate::cost(text_cost.multiply(part_cost).add(args_sum))
            }
            (Overload::LogicalAnd | Overload::LogicalOr, _, [_, _]) => {
                // Short-circuiting: at least the left side, at most both.
                let (lhs, rhs) = (arg_costs[0], arg_costs[1]);
                CallEstimate::cost(Estimate { min: lhs.min, max: lhs.add(rhs).max })
            }
            (Overload::Conditional, _, [_, when_true, when_false]) => {
                let size = self.size_or_unknown(when_true).union(self.size_or_unknown(when_false));
                if let (Some(a), Some(b)) = (self.entry_size_of(when_true), self.entry_size_of(when_false)) {
                    self.entry_sizes.insert(id, a.union(b));
                }
                let cost = arg_costs[0].add(arg_costs[1].union(arg_costs[2]));
                CallEstimate { cost, result_size: Some(size) }
            }
            (Overload::StringToBytes | Overload::BytesToString, None, [value]) => {
                // Up to 4 bytes per character.
                let size = self.size_or_unknown(value);
                let result = if overload == Overload::StringToBytes {
                    Estimate { min: size.min, max: size.max.saturating_mul(4) }
                } else {
                    Estimate { min: size.min / 4, max: size.max }
                };
                CallEstimate { cost: size.times(STRING_TRAVERSAL_COST_FACTOR).add(args_sum), result_size: Some(result) }
            }
            (Overload::AddString | Overload::AddBytes | Overload::AddList, _, [lhs, rhs]) => {
                let size = self.size_or_unknown(lhs).add(self.size_or_unknown(rhs));
                if let (Some(a), Some(b)) = (self.entry_size_of(lhs), self.entry_size_of(rhs)) {
                    self.entry_sizes.insert(id, a.union(b));
                }
                let cost = if overload == Overload::AddList {
                    // Concatenating lists is O(1); it is here for the size it makes.
                    Estimate::fixed(1)
                } else {
                    size.times(STRING_TRAVERSAL_COST_FACTOR)
                };
                CallEstimate { cost: cost.add(args_sum), result_size: Some(size) }
            }
            (Overload::Comparison, _, [lhs, rhs]) => {
                let smallest = self.size_or_unknown(lhs).max.min(self.size_or_unknown(rhs).max);
                let cost = Estimate { min: u64::from(smallest > 0), max: smallest };
                CallEstimate::cost(cost.times(STRING_TRAVERSAL_COST_FACTOR).add(args_sum))
            }
            // Everything else is O(1).
            _ => CallEstimate::cost(Estimate::fixed(1).add(args_sum)),
        }
    }

    /// The Kubernetes library's estimates (`library.CostEstimator.EstimateCallCost`), without
    /// the arguments' own costs; `None` leaves the call to cel-go's.
    fn kubernetes_cost(&mut self, call: &CallExpr, overload: Overload) -> Option<CallEstimate> {
        let target = call.target.as_deref();
        let args = call.args.as_slice();
        let traversal = |size: Estimate| size.times(STRING_TRAVERSAL_COST_FACTOR);
        let nominal = || Some(CallEstimate::cost(Estimate::fixed(1)));
        match (call.func_name.as_str(), target, args) {
            ("check", ..) => Some(CallEstimate::cost(Estimate::fixed(AUTHZ_CHECK_COST))),
            (
                "serviceAccount" | "path" | "group" | "resource" | "subresource" | "namespace" | "name" | "allowed"
                | "reason" | "error" | "errored",
                ..,
            ) => nominal(),
            ("fieldSelector" | "labelSelector", _, [selector]) => {
                Some(CallEstimate::cost(selector_cost(self.size_or_unknown(selector))))
            }
            ("isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf", Some(list), _) => {
                let size = self.size_or_unknown(list);
                let cost = match self.type_of(list) {
                    Type::List(element) => {
                        // One comparison per element, plus reading it when it is a string.
                        let mut per_element = Estimate::fixed(1);
                        if matches!(*element, Type::String | Type::Bytes) {
                            per_element = per_element.add(traversal(self.element_size(list)));
                        }
                        size.multiply(per_element)
                    }
                    _ => traversal(size),
                };
                Some(CallEstimate::cost(cost))
            }
            ("url" | "jsonpatch.escapeKey", _, [text]) => {
                let size = self.size_or_unknown(text);
                Some(CallEstimate { cost: traversal(size), result_size: Some(size) })
            }
            ("lowerAscii" | "upperAscii" | "substring" | "trim", Some(text), _) => {
                let size = self.size_or_unknown(text);
                Some(CallEstimate { cost: traversal(size), result_size: Some(size) })
            }
            ("replace", Some(text), [from, to, ..]) => {
                let (size, from, to) =
                    (self.size_or_unknown(text), self.size_or_unknown(from), self.size_or_unknown(to));
                Some(CallEstimate {
                    cost: size.times(2.0 * STRING_TRAVERSAL_COST_FACTOR),
                    result_size: Some(replaced_size(size, from, to)),
                })
            }
            ("split", Some(text), _) => {
                let size = self.size_or_unknown(text);
                // At worst every character is a piece, unless a literal limit says otherwise.
                let limit = match args.get(1).map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::Int(limit))) => u64::try_from(**limit).ok(),
                    _ => None,
                };
                let result = Estimate { min: 0, max: limit.unwrap_or(size.max) };
                Some(CallEstimate { cost: size.times(2.0 * STRING_TRAVERSAL_COST_FACTOR), result_size: Some(result) })
            }
            ("join", Some(list), _) => {
                let count = self.size_or_unknown(list);
                let mut size = match self.type_of(list) {
                    Type::List(_) => count.multiply(self.element_size(list)),
                    _ => Estimate::ZERO,
                };
                if let Some(separator) = args.first() {
                    let separators = Estimate { min: count.min.saturating_sub(1), max: count.max.saturating_sub(1) };
                    size = size.add(self.size_or_unknown(separator).multiply(separators));
                }
                Some(CallEstimate { cost: traversal(size), result_size: Some(size) })
            }
            ("find" | "findAll", Some(text), [regex, ..]) => {
                let size = self.size_or_unknown(text);
                let text_cost = traversal(size.add(Estimate::fixed(1)));
                let regex_cost = self.size_or_unknown(regex).times(REGEX_STRING_LENGTH_COST_FACTOR);
                Some(CallEstimate {
                    cost: text_cost.multiply(regex_cost),
                    result_size: Some(Estimate { min: 0, max: size.max }),
                })
            }
            // Parsing a string (functions called as `isIP(s)`, not only as methods, as a real
            // API server estimates them).
            ("cidr" | "isIP" | "isCIDR" | "quantity" | "isQuantity" | "semver" | "isSemver", _, [text, ..]) => {
                Some(CallEstimate::cost(traversal(self.size_or_unknown(text))))
            }
            ("ip", _, [text, ..]) if overload != Overload::CidrIp => {
                Some(CallEstimate::cost(traversal(self.size_or_unknown(text))))
            }
            ("ip", Some(_), _) => nominal(),
            ("ip.isCanonical", Some(_), [text, ..]) => {
                Some(CallEstimate::cost(self.size_or_unknown(text).times(2.0 * STRING_TRAVERSAL_COST_FACTOR)))
            }
            ("containsIP" | "containsCIDR", Some(_), [other, ..]) => {
                // Comparing the bytes of two IPv4 or IPv6 addresses.
                let address = Estimate { min: 4, max: 16 };
                let mut cost = traversal(address.add(address));
                if call.func_name == "containsCIDR" {
                    cost = cost.add(traversal(address)).add(Estimate::fixed(1));
                }
                if overload == Overload::ContainsOfString {
                    cost = cost.add(traversal(self.size_or_unknown(other)));
                }
                Some(CallEstimate::cost(cost))
            }
            (
                "masked"
                | "prefixLength"
                | "family"
                | "isUnspecified"
                | "isLoopback"
                | "isLinkLocalMulticast"
                | "isLinkLocalUnicast"
                | "isGlobalUnicast"
                | "format.named"
                | "sign"
                | "asInteger"
                | "isInteger"
                | "asApproximateFloat"
                | "isGreaterThan"
                | "isLessThan"
                | "compareTo"
                | "add"
                | "sub"
                | "major"
                | "minor"
                | "patch"
                | "getScheme"
                | "getHostname"
                | "getHost"
                | "getPort"
                | "getEscapedPath"
                | "getQuery",
                ..,
            ) => nominal(),
            ("_==_", None, [lhs, rhs]) => match (self.type_of(lhs), self.type_of(rhs)) {
                (Type::Opaque(Library::Url), Type::Opaque(Library::Url)) => {
                    // As Kubernetes does, from the right-hand side's size alone.
                    let size = self.compute_size(rhs).unwrap_or(Estimate::fixed(1));
                    Some(CallEstimate::cost(traversal(Estimate { min: 1, max: size.max })))
                }
                (Type::Opaque(a), Type::Opaque(b)) if a == b => nominal(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The overloads a call may resolve to, from its function and argument types: one, unless
    /// a `dyn` argument leaves several open.
    fn overloads(&self, call: &CallExpr) -> Vec<Overload> {
        use Overload::*;
        let arg_type = |i: usize| call.args.get(i).map_or(Type::Dyn, |arg| self.type_of(arg));
        let member = call.target.is_some();
        let one = |overload| vec![overload];
        match call.func_name.as_str() {
            "_&&_" => one(LogicalAnd),
            "_||_" => one(LogicalOr),
            "_?_:_" => one(Conditional),
            "_==_" | "_!=_" => one(Comparison),
            "_<_" | "_<=_" | "_>_" | "_>=_" => match arg_type(0) {
                Type::String | Type::Bytes => one(Comparison),
                Type::Dyn => vec![Comparison, Other],
                _ => one(Other),
            },
            "@in" => match arg_type(1) {
                Type::List(_) => one(InList),
                Type::Dyn => vec![InList, Other],
                _ => one(Other),
            },
            "_[_]" => match arg_type(0) {
                Type::List(_) => one(IndexList),
                Type::Map(..) => one(IndexMap),
                Type::Dyn => vec![IndexList, IndexMap],
                _ => one(Other),
            },
            "_+_" => match (arg_type(0), arg_type(1)) {
                (Type::String, _) | (Type::Dyn, Type::String) => one(AddString),
                (Type::Bytes, _) | (Type::Dyn, Type::Bytes) => one(AddBytes),
                (Type::List(_), _) | (Type::Dyn, Type::List(_)) => one(AddList),
                (Type::Dyn, Type::Dyn) => vec![AddString, AddBytes, AddList, Other],
                _ => one(Other),
            },
            "string" if !member => match arg_type(0) {
                Type::Bytes => one(BytesToString),
                Type::Dyn => vec![Other, BytesToString],
                _ => one(Other),
            },
            "bytes" if !member => match arg_type(0) {
                Type::String => one(StringToBytes),
                Type::Dyn => vec![Other, StringToBytes],
                _ => one(Other),
            },
            "matches" if member => one(MatchesString),
            "startsWith" | "endsWith" if member => one(StartsOrEndsWith),
            "contains" if member => one(ContainsString),
            "ip" if member && call.args.is_empty() => one(CidrIp),
            "containsIP" | "containsCIDR" if arg_type(0) == Type::String => one(ContainsOfString),
            _ => one(Other),
        }
    }

    /// The type a call returns.
    fn result_type(&self, call: &CallExpr) -> Type<'a> {
        let arg_type = |i: usize| call.args.get(i).map_or(Type::Dyn, |arg| self.type_of(arg));
        let target_type = || call.target.as_deref().map_or(Type::Dyn, |target| self.type_of(target));
        match call.func_name.as_str() {
            "_&&_"
            | "_||_"
            | "!_"
            | "@not_strictly_false"
            | "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "@in"
            | "matches"
            | "startsWith"
            | "endsWith"
            | "contains"
            | "isURL"
            | "isIP"
            | "isCIDR"
            | "isQuantity"
            | "isSemver"
            | "isSorted"
            | "isInteger"
            | "isGreaterThan"
            | "isLessThan"
            | "containsIP"
            | "containsCIDR"
            | "ip.isCanonical"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast"
            | "isGlobalUnicast"
            | "bool" => Type::Bool,
            "_?_:_" => match arg_type(1) {
                Type::Dyn => arg_type(2),
                ty => ty,
            },
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" => arithmetic_type(&call.func_name, arg_type(0), arg_type(1)),
            "-_" => arg_type(0),
            "_[_]" => match arg_type(0) {
                Type::List(element) => *element,
                Type::Map(_, value) => *value,
                _ => Type::Dyn,
            },
            "size" | "int" | "indexOf" | "lastIndexOf" | "sign" | "asInteger" | "compareTo" | "prefixLength"
            | "family" | "major" | "minor" | "patch" => Type::Int,
            "uint" => Type::Uint,
            "double" | "asApproximateFloat" => Type::Double,
            "string" | "lowerAscii" | "upperAscii" | "trim" | "substring" | "replace" | "join" | "find" | "format"
            | "charAt" | "getScheme" | "getHost" | "getHostname" | "getPort" | "getEscapedPath" => Type::String,
            "bytes" => Type::Bytes,
            "duration" => Type::Duration,
            "timestamp" => Type::Timestamp,
            "split" | "findAll" => Type::List(Box::new(Type::String)),
            "url" => Type::Opaque(Library::Url),
            "ip" => Type::Opaque(Library::Ip),
            "cidr" | "masked" => Type::Opaque(Library::Cidr),
            "quantity" | "add" | "sub" => Type::Opaque(Library::Quantity),
            "semver" => Type::Opaque(Library::Semver),
            "getQuery" => Type::Map(Box::new(Type::String), Box::new(Type::List(Box::new(Type::String)))),
            "sum" | "min" | "max" => target_type().element(),
            _ => Type::Dyn,
        }
    }

    /// Where `e`'s value comes from (cel-go's `getPath`).
    fn path_of(&self, e: &IdedExpr) -> Vec<String> {
        if let Expr::Ident(name) = &e.expr
            && let Some(local) = self.local(name)
        {
            return local.path.clone();
        }
        self.paths.get(&e.id).cloned().unwrap_or_default()
    }

    /// The size of `e`'s value, if known: computed, literal, from the schema, or of a scalar.
    fn compute_size(&mut self, e: &IdedExpr) -> Option<Estimate> {
        if let Some(size) = self.sizes.get(&e.id) {
            return Some(*size);
        }
        if let Some(size) = literal_size(e) {
            return Some(size);
        }
        if let Some(size) = self.schema_size(&self.path_of(e)) {
            self.sizes.insert(e.id, size);
            return Some(size);
        }
        if self.type_of(e).is_scalar() {
            return Some(Estimate::fixed(1));
        }
        match &e.expr {
            Expr::Ident(name) => self.local(name).and_then(|local| local.size),
            _ => None,
        }
    }

    fn size_or_unknown(&mut self, e: &IdedExpr) -> Estimate {
        self.compute_size(e).unwrap_or(Estimate::UNKNOWN)
    }

    /// The size of the elements of list `list`, from the schema.
    fn element_size(&mut self, list: &IdedExpr) -> Estimate {
        let mut path = self.path_of(list);
        if path.is_empty() || path[0] == ACCUMULATOR {
            return Estimate::UNKNOWN;
        }
        path.push("@items".to_string());
        self.schema_size(&path).unwrap_or(Estimate::UNKNOWN)
    }

    /// Kubernetes' size estimator: the node `path` names below the rule's own (whatever
    /// variable it starts from) bounds the size by its `MaxElements`.
    fn schema_size(&self, path: &[String]) -> Option<Estimate> {
        let (_, steps) = path.split_first()?;
        let mut node = self.root;
        for (i, step) in steps.iter().enumerate() {
            if step == "@keys" {
                let is_map = matches!(node.kind, DeclKind::Map(_));
                return (is_map && i + 1 == steps.len())
                    .then(|| Estimate { min: 0, max: DeclType::map_key().max_elements });
            }
            node = node.step(step)?;
        }
        Some(Estimate { min: 0, max: node.max_elements })
    }

    fn entry_size_of(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(entry) = self.entry_sizes.get(&e.id) {
            return Some(*entry);
        }
        match &e.expr {
            Expr::Ident(name) => self.local(name).and_then(|local| local.entry),
            _ => None,
        }
    }

    fn copy_sizes(&mut self, to: u64, from: &IdedExpr) {
        if let Some(size) = self.compute_size(from) {
            self.sizes.insert(to, size);
        }
        if let Some(entry) = self.entry_size_of(from) {
            self.entry_sizes.insert(to, entry);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum IterVar {
    /// The one variable of a one-variable comprehension: list items or map keys.
    Single,
    Key,
    Value,
}

fn literal_type<'a>(literal: &LiteralValue) -> Type<'a> {
    match literal {
        LiteralValue::Boolean(_) => Type::Bool,
        LiteralValue::Bytes(_) => Type::Bytes,
        LiteralValue::Double(_) => Type::Double,
        LiteralValue::Int(_) => Type::Int,
        LiteralValue::Null => Type::Null,
        LiteralValue::String(_) => Type::String,
        LiteralValue::UInt(_) => Type::Uint,
    }
}

/// The exact size of a literal, list or map written in the expression.
fn literal_size(e: &IdedExpr) -> Option<Estimate> {
    let size = match &e.expr {
        Expr::Literal(LiteralValue::String(text)) => text.chars().count() as u64,
        Expr::Literal(LiteralValue::Bytes(bytes)) => bytes.len() as u64,
        Expr::Literal(_) => 1,
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        _ => return None,
    };
    Some(Estimate::fixed(size))
}

fn arithmetic_type<'a>(function: &str, lhs: Type<'a>, rhs: Type<'a>) -> Type<'a> {
    match (function, &lhs, &rhs) {
        ("_-_", Type::Timestamp, Type::Timestamp) => Type::Duration,
        (_, Type::Duration, Type::Timestamp) => Type::Timestamp,
        (_, Type::List(element), Type::List(other)) if **element == Type::Dyn => Type::List(other.clone()),
        (_, Type::Dyn, _) => rhs,
        _ => lhs,
    }
}

/// `cel.bind()`: a comprehension over `[]` that never loops, binding a variable of its own.
fn is_bind(c: &ComprehensionExpr) -> bool {
    matches!(&c.iter_range.expr, Expr::List(list) if list.elements.is_empty())
        && matches!(&c.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if !**b)
        && c.accu_var != ACCUMULATOR
}

/// Parsing a label or field selector: a list of requirements, about one per two characters.
fn selector_cost(length: Estimate) -> Estimate {
    let parse = length.times(STRING_TRAVERSAL_COST_FACTOR);
    let requirements = length.times(0.5).times((LIST_CREATE_BASE_COST + STRUCT_CREATE_BASE_COST) as f64);
    Estimate::fixed(LIST_CREATE_BASE_COST).add(parse).add(requirements)
}

/// The size of `text.replace(from, to)`: as many replacements as can fit, of the largest or
/// smallest replacement.
fn replaced_size(text: Estimate, from: Estimate, to: Estimate) -> Estimate {
    let (mut count, mut kept) = (Estimate::ZERO, Estimate::ZERO);
    if from.min == 0 {
        // Replacing "" surrounds every character.
        count.max = text.max.saturating_add(1);
        kept.max = text.max;
    } else if to.max <= from.min {
        kept.max = text.max;
    } else {
        count.max = (text.max as f64 / from.min as f64).ceil() as u64;
    }
    if from.max == 0 {
        count.min = text.min.saturating_add(1);
        kept.min = text.min;
    } else if from.max <= to.min {
        kept.min = text.min;
    } else {
        count.min = (text.min as f64 / from.max as f64).ceil() as u64;
    }
    count.multiply(to).add(kept)
}
