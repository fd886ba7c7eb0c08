"""Reading template.yaml in tests: a YAML loader that accepts CloudFormation's short tags.

``!Ref X`` becomes ``{"Ref": "X"}``, ``!GetAtt A.B`` becomes ``{"Fn::GetAtt": ["A", "B"]}`` and every
other ``!Name`` becomes ``{"Fn::Name": value}``: the long forms CloudFormation itself uses, so tests
compare plain data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation's ``!Tag`` shorthand."""


def _node_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.MappingNode)
    return loader.construct_mapping(node, deep=True)


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value = _node_value(loader, node)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass
    assert isinstance(data, dict)
    return data


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == kind}


def http_routes(template: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    """Function logical id -> the (METHOD, path) of its HttpApi events (the raw template's functions)."""
    return {
        name: {
            (str(ev["Properties"]["Method"]).upper(), str(ev["Properties"]["Path"]))
            for ev in (fn["Properties"].get("Events") or {}).values()
            if ev["Type"] == "HttpApi"
        }
        for name, fn in resources_of_type(template, "AWS::Serverless::Function").items()
    }


def http_functions(template: dict[str, Any]) -> set[str]:
    """The functions the HTTP API routes to (the authorizer aside)."""
    return {name for name, routes in http_routes(template).items() if routes}


# --- Reading a template (raw or translated): references, dependencies, resolution ---------------------

Template = dict[str, Any]


def resources_of(t: Template) -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = t["Resources"]
    return resources


def of_type(t: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources_of(t).items() if r["Type"] == kind}


def referenced(value: Any) -> set[str]:
    """Logical ids ``value`` refers to (Ref, GetAtt, ${X} / ${X.Attr} in Sub), pseudo parameters aside."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(str(inner[0] if isinstance(inner, list) else inner.split(".")[0]))
            elif key == "Fn::Sub":
                text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
                names = {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                found |= names - set(variables)
                found |= referenced(variables)
            else:
                found |= referenced(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= referenced(inner)
    return {name for name in found if not name.startswith("AWS::")}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def depends_on(resource: dict[str, Any]) -> set[str]:
    return {str(d) for d in as_list(resource.get("DependsOn") or [])}


def resolve(value: Any, template: Template, parameters: dict[str, str]) -> Any:
    """``value`` as CloudFormation would resolve it for ``parameters`` (defaults otherwise): enough of
    Fn::If, Fn::Equals, Fn::Not, Fn::Or, Fn::Select, Fn::Split and Ref to parameters for the conditions
    and rules this template uses."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "Ref" and inner in template["Parameters"]:
            return str(parameters.get(inner, template["Parameters"][inner].get("Default")))
        if key == "Fn::Equals":
            left, right = (resolve(v, template, parameters) for v in inner)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not resolve(inner[0], template, parameters)
        if key == "Fn::Or":
            return any(resolve(v, template, parameters) for v in inner)
        if key == "Fn::Split":
            separator, text = inner
            return str(resolve(text, template, parameters)).split(separator)
        if key == "Fn::Select":
            index, items = inner
            return resolve(items, template, parameters)[int(index)]
        if key == "Fn::If":
            condition, then, otherwise = inner
            holds = resolve(template["Conditions"][condition], template, parameters)
            return resolve(then if holds else otherwise, template, parameters)
    return value
