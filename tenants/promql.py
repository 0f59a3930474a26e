"""The PromQL rewriter: every selector of a tenant's query gets the tenant matcher.

The prom-label-proxy model, built on promql-parser's AST rather than on text: the query is
parsed, and a serializer of our own writes it back with ``tenant="<t>"`` in every vector
selector (plain, in a range, in a subquery, ``{__name__=~".+"}`` too). A tenant matcher the
user wrote is dropped when the tenant's name satisfies it (ours replaces it) and refused when
it does not. We write the text ourselves because promql-parser's ``str()`` does not escape
label values (a ``"`` in a value would end the string and let the rest become PromQL) and
turns some subqueries into range selectors; its ``transform`` does not apply replacements.

Refused (``Refused``, a 4xx with the reason): what the rewriter cannot make safe. That is
``label_replace``/``label_join`` writing the tenant label and ``count_values`` naming it (they
could forge the tenant label of a result), ``info()`` (it reads ``target_info`` series the
query never names), selectors with ``or`` alternatives, quoted UTF-8 label names, and
anything too long or too deep. ``or``, ``on()``, ``ignoring``, subqueries, ``absent`` and
``vector()`` are safe: every selector on each side carries the matcher, and a constant holds
no tenant's data.

Defence in depth: the written query is parsed again and every selector of that parse must
carry exactly our matcher, so a serializer bug is a refusal, never a leak.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import promql_parser as pp

MAX_QUERY_BYTES = 16 * 1024  # Grafana's queries are far shorter; bounds parse time
MAX_DEPTH = 64  # nesting levels of the AST
MAX_SELECTORS = 200
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_FORGING_FUNCTIONS = ("label_replace", "label_join")  # their 2nd argument names the label set
_REFUSED_FUNCTIONS = {"info": "info() reads target_info series the query does not name"}
_OPS = (  # MatchOp is not hashable: a list of pairs
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
)


def _op(op: Any) -> str:
    for known, text in _OPS:
        if op == known:
            return text
    raise Refused("unknown label matcher operator")


class Refused(Exception):
    """A query the rewriter will not run: ``reason`` is one line for the client (it never
    repeats a label value the client sent)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Scope:
    """Who a query runs for: the tenant label and the one tenant it must be restricted to."""

    tenant: str
    label: str = "tenant"

    def matcher_text(self) -> str:
        return f"{self.label}={quote(self.tenant)}"


def quote(value: str) -> str:
    """A PromQL (Go-syntax) double-quoted string that reads back as ``value`` exactly."""
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def regex_escape(value: str) -> str:
    """A value as an RE2 regular expression matching exactly it."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value)


def _duration(td: timedelta) -> str:
    if td < timedelta(0):
        return "-" + pp.display_duration(-td)
    return pp.display_duration(td) if td > timedelta(0) else "0s"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _compound(e: Any) -> bool:
    """Whether an operand needs parentheses to keep its place (``-1 ^ 2`` is ``-(1 ^ 2)``)."""
    if isinstance(e, pp.NumberLiteral):
        return e.val < 0 or (math.isinf(e.val) and e.val < 0)
    return isinstance(e, pp.BinaryExpr | pp.UnaryExpr)


def _label_list(labels: Sequence[str] | None) -> str:
    names = list(labels or [])
    for name in names:
        if not _LABEL_NAME.match(name):
            raise Refused("only plain label names (letters, digits, _) are accepted in by/on")
    return ", ".join(names)


class _Writer:
    """Writes an AST back as PromQL with the tenant matcher in every selector."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.selectors = 0

    def expr(self, e: Any, depth: int = 0) -> str:
        if depth > MAX_DEPTH:
            raise Refused(f"query nested deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(e, pp.VectorSelector):
            return self.selector(e)
        if isinstance(e, pp.MatrixSelector):
            vs = e.vector_selector
            return self.selector(vs, f"[{_duration(e.range)}]")
        if isinstance(e, pp.NumberLiteral):
            return _number(e.val)
        if isinstance(e, pp.StringLiteral):
            return quote(e.val)
        if isinstance(e, pp.ParenExpr):
            return f"({self.expr(e.expr, d)})"
        if isinstance(e, pp.UnaryExpr):
            return f"-{self.operand(e.expr, d)}"
        if isinstance(e, pp.SubqueryExpr):
            step = _duration(e.step) if e.step is not None else ""
            inner = self.expr(e.expr, d)
            bare = isinstance(e.expr, pp.ParenExpr | pp.Call) or (
                isinstance(e.expr, pp.VectorSelector)
                and e.expr.offset is None
                and e.expr.at is None
            )
            if not bare:
                inner = f"({inner})"
            if e.range is None:
                raise Refused("a subquery needs a range")
            text = f"{inner}[{_duration(e.range)}:{step}]"
            return text + _modifiers(e.offset, e.at)
        if isinstance(e, pp.Call):
            return self.call(e, d)
        if isinstance(e, pp.AggregateExpr):
            return self.aggregate(e, d)
        if isinstance(e, pp.BinaryExpr):
            return self.binary(e, d)
        raise Refused(f"unsupported PromQL construct {type(e).__name__}")

    def selector(self, vs: Any, range_text: str = "") -> str:
        self.selectors += 1
        if self.selectors > MAX_SELECTORS:
            raise Refused(f"more than {MAX_SELECTORS} selectors in one query")
        if vs.matchers.or_matchers:
            raise Refused(
                "selectors with `or` alternatives are not accepted; use `or` between selectors"
            )
        parts = []
        name = vs.name
        if name is not None and not _METRIC_NAME.match(name):
            raise Refused("only plain metric names are accepted (no quoted UTF-8 names)")
        for m in vs.matchers.matchers:
            if not _LABEL_NAME.match(m.name):
                raise Refused("only plain label names are accepted (no quoted UTF-8 names)")
            if m.name == self.scope.label:
                kept = self._tenant_matcher(m)
                if kept is not None:
                    parts.append(kept)
                continue  # replaced by ours
            parts.append(f"{m.name}{_op(m.op)}{quote(m.value)}")
        parts.append(self.scope.matcher_text())
        text = (name or "") + "{" + ",".join(parts) + "}" + range_text
        return text + _modifiers(vs.offset, vs.at)

    def _tenant_matcher(self, m: Any) -> str | None:
        """What becomes of a matcher the user wrote on the tenant label: dropped (None: ours
        replaces it) when it lets the scope's tenant through, kept beside ours when only
        RE2 can tell (the AND with ours can only narrow), 403 when it excludes the tenant."""
        value, tenant = m.value, self.scope.tenant
        if m.op == pp.MatchOp.Equal:
            ok = value == tenant
        elif m.op == pp.MatchOp.NotEqual:
            ok = value != tenant
        else:
            # Only regexes we can decide exactly are evaluated here (a user's pattern is never
            # run by Python's backtracking engine): .* and .+, and alternations of literals
            # such as Grafana's multi-value variables, (a|b).
            admitted = _literal_regex(value, tenant)
            if admitted is None:
                return f"{m.name}{_op(m.op)}{quote(value)}"
            ok = admitted if m.op == pp.MatchOp.Re else not admitted
        if not ok:
            raise Refused(
                f"the query selects a {self.scope.label} other than yours; "
                f"every selector is limited to {self.scope.label}={quote(tenant)}",
                403,
            )
        return None

    def call(self, e: Any, d: int) -> str:
        name = e.func.name
        if name in _REFUSED_FUNCTIONS:
            raise Refused(_REFUSED_FUNCTIONS[name])
        args = list(e.args)
        if name in _FORGING_FUNCTIONS and len(args) > 1:
            target = args[1]
            if not isinstance(target, pp.StringLiteral) or target.val == self.scope.label:
                raise Refused(f"{name} may not write the {self.scope.label} label")
        return f"{name}(" + ", ".join(self.expr(a, d) for a in args) + ")"

    def aggregate(self, e: Any, d: int) -> str:
        op = str(e.op)
        if op == "count_values" and (
            not isinstance(e.param, pp.StringLiteral) or e.param.val == self.scope.label
        ):
            raise Refused(f"count_values may not write the {self.scope.label} label")
        mod = ""
        if e.modifier is not None:
            kind = "by" if e.modifier.type == pp.AggModifierType.By else "without"
            mod = f" {kind} ({_label_list(e.modifier.labels)})"
        inner = self.expr(e.expr, d)
        if e.param is not None:
            inner = f"{self.expr(e.param, d)}, {inner}"
        return f"{op}{mod} ({inner})"

    def binary(self, e: Any, d: int) -> str:
        op = str(e.op)
        mod = ""
        m = e.modifier
        if m is not None:
            fill = m.fill_values
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise Refused("fill modifiers are not accepted")
            if m.return_bool:
                mod += " bool"
            if m.matching is not None:
                kind = "on" if m.matching.type == pp.LabelModifierType.Include else "ignoring"
                mod += f" {kind} ({_label_list(m.matching.labels)})"
            if op not in ("and", "or", "unless"):
                if m.card == pp.VectorMatchCardinality.ManyToOne:
                    mod += f" group_left ({_label_list(m.group_labels)})"
                elif m.card == pp.VectorMatchCardinality.OneToMany:
                    mod += f" group_right ({_label_list(m.group_labels)})"
        return f"{self.operand(e.lhs, d)} {op}{mod} {self.operand(e.rhs, d)}"

    def operand(self, e: Any, d: int) -> str:
        text = self.expr(e, d)
        return f"({text})" if _compound(e) else text


_LITERALS = re.compile(r"^[A-Za-z0-9_\-]+(\|[A-Za-z0-9_\-]+)*$")


def _literal_regex(pattern: str, value: str) -> bool | None:
    """Whether an RE2 pattern (anchored, as Prometheus anchors it) matches ``value``, for the
    patterns decidable without a regex engine; None for the rest."""
    if pattern in (".*", ".+", "^.*$", "^.+$", ".*?", ".+?"):
        return pattern.startswith((".*", "^.*")) or value != ""
    inner = pattern[1:-1] if pattern.startswith("(") and pattern.endswith(")") else pattern
    if _LITERALS.match(inner) and "(" not in inner:
        return value in inner.split("|")
    return None


def _modifiers(offset: timedelta | None, at: Any) -> str:
    out = ""
    if offset is not None:
        out += f" offset {_duration(offset)}"
    if at is not None:
        if at.type == pp.AtModifierType.Start:
            out += " @ start()"
        elif at.type == pp.AtModifierType.End:
            out += " @ end()"
        else:
            out += f" @ {at.at.timestamp():.3f}"
    return out


def _parse(query: str) -> Any:
    if not isinstance(query, str) or not query.strip():
        raise Refused("empty query")
    if len(query.encode()) > MAX_QUERY_BYTES:
        raise Refused(f"query over {MAX_QUERY_BYTES} bytes")
    try:
        return pp.parse(query)
    except (ValueError, TypeError, RuntimeError, OverflowError) as err:
        first = str(err).splitlines()[0] if str(err) else "invalid"
        raise Refused(f"cannot parse the query: {first[:200]}") from None
    except BaseException as err:  # a Rust panic surfaces as PanicException (a BaseException)
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise Refused("cannot parse the query") from None


def _selectors(e: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):  # walk visits a range's selector as well
            found.append(node)

    pp.walk(e, visit)
    return found


def _verify(text: str, scope: Scope, selectors: int) -> None:
    """The written query, parsed again, has as many selectors, each with exactly our
    matcher on the tenant label."""
    try:
        again = pp.parse(text)
    except BaseException as err:  # a parse error or a Rust panic: never sent
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise Refused("the query cannot be rewritten safely") from None
    found = _selectors(again)
    if len(found) != selectors:
        raise Refused("the query cannot be rewritten safely")
    for vs in found:
        mine = [m for m in vs.matchers.matchers if m.name == scope.label]
        equal = [m for m in mine if m.op == pp.MatchOp.Equal]
        if vs.matchers.or_matchers or len(equal) != 1 or equal[0].value != scope.tenant:
            raise Refused("the query cannot be rewritten safely")
        if any(m.op == pp.MatchOp.NotEqual for m in mine):  # always decided, never kept
            raise Refused("the query cannot be rewritten safely")


def enforce(query: str, scope: Scope) -> str:
    """``query`` with the tenant matcher in every selector, or ``Refused``."""
    tree = _parse(query)
    writer = _Writer(scope)
    text = writer.expr(tree)
    _verify(text, scope, writer.selectors)
    return text


def enforce_selector(selector: str, scope: Scope) -> str:
    """A series selector (``match[]`` of the series, labels and values APIs) with the tenant
    matcher, or ``Refused`` when it is not a plain selector."""
    tree = _parse(selector)
    if not isinstance(tree, pp.VectorSelector):
        raise Refused('match[] must be a series selector like up{job="x"}')
    writer = _Writer(scope)
    text = writer.selector(tree)
    if tree.offset is not None or tree.at is not None:
        raise Refused("match[] takes no offset or @ modifier")
    _verify(text, scope, 1)
    return text


def enforce_all(selectors: Iterable[str], scope: Scope) -> list[str]:
    """Every ``match[]`` rewritten; none given: the tenant's own series."""
    out = [enforce_selector(s, scope) for s in selectors]
    return out or ["{" + scope.matcher_text() + "}"]
