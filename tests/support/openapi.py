"""Check an app's routes and real answers against its OpenAPI description.

``Spec.of(package)`` loads the package's openapi.yaml. ``spec.operations()`` and
``routes(app)`` are ``(METHOD, "/path/{param}")`` sets to compare; ``spec.check(method, path,
response)`` asserts that the status code, the media type and a JSON body are documented.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from solverfleet.obs.web import openapi_document

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Flask serves these on its own; they are not part of the API.
FRAMEWORK_ENDPOINTS = {"static"}
# HTML pages for browsers behind a session login (collector/dashboard): not part of the API.
HTML_BLUEPRINTS = ("dashboard.",)
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def routes(app: Flask) -> set[tuple[str, str]]:
    """``(METHOD, "/path/{param}")`` for every rule of the app, HEAD and OPTIONS left out."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in FRAMEWORK_ENDPOINTS or rule.endpoint.startswith(HTML_BLUEPRINTS):
            continue
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((method, path))
    return found


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Spec:
    URI = "urn:solverfleet:openapi"

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(self.URI, resource)

    @classmethod
    def of(cls, package: str) -> Spec:
        return cls(openapi_document(package))

    def operations(self) -> set[tuple[str, str]]:
        return {
            (method.upper(), path)
            for path, item in self.doc["paths"].items()
            for method in item
            if method in METHODS
        }

    def _deref(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Follow a ``$ref`` (responses are not schemas, so refs are followed by hand)."""
        ref = node.get("$ref")
        if ref is None:
            return node, None
        assert ref.startswith("#/"), ref
        target = self.doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target, ref[2:]

    def template(self, path: str) -> str:
        """The described path that ``path`` (query left out) is an instance of; a literal
        path wins over a templated one, as in Flask's routing."""
        path = path.split("?", 1)[0]
        if path in self.doc["paths"]:
            return path
        for candidate in self.doc["paths"]:
            pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(candidate))
            if re.fullmatch(pattern, path):
                return candidate
        raise AssertionError(f"{path} matches no described path")

    def check(self, method: str, path: str, response: Any) -> None:
        """Assert ``response`` (Flask test or requests response) is documented for the
        operation at ``path`` (concrete or templated): its status code, its media type and,
        for JSON, its body's schema."""
        status = response.status_code
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        body = response.get_data() if hasattr(response, "get_data") else response.content
        path = self.template(path)
        operation = self.doc["paths"][path][method.lower()]
        responses = operation["responses"]
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        assert key in responses, f"{method} {path}: status {status} is not documented"
        documented, ref = self._deref(responses[key])
        where = ref or _pointer("paths", path, method.lower(), "responses", key)
        content = documented.get("content", {})
        assert content_type in content, (
            f"{method} {path} {status}: {content_type!r} not in {sorted(content)}"
        )
        if content_type != "application/json":
            return
        pointer = f"{self.URI}#/{where}/{_pointer('content', content_type, 'schema')}"
        OAS31Validator({"$ref": pointer}, registry=self.registry).validate(json.loads(body))
