#!/usr/bin/env python3
"""Checks charts/gatehouse/values.schema.json against the chart's values files, as helm would:
each file is deep-merged over values.yaml (maps merge, lists and scalars replace) and the
result validated. values.yaml and ci/*.yaml must pass; every ci/invalid/*.yaml must fail (so
the schema demonstrably refuses, e.g., several replicas on SQLite). Exit 1 on any surprise."""
import copy
import json
import pathlib
import sys

import jsonschema
import yaml

CHART = pathlib.Path(__file__).resolve().parent / "gatehouse"


def merge(base, over):
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def main():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    failures = 0
    cases = [("values.yaml", {}, True)]
    cases += [(str(p.relative_to(CHART)), yaml.safe_load(p.read_text()), True)
              for p in sorted((CHART / "ci").glob("*.yaml"))]
    cases += [(str(p.relative_to(CHART)), yaml.safe_load(p.read_text()), False)
              for p in sorted((CHART / "ci" / "invalid").glob("*.yaml"))]
    for name, values, should_pass in cases:
        errors = sorted(validator.iter_errors(merge(defaults, values)), key=str)
        ok = not errors
        if ok == should_pass:
            why = "" if ok else f" (refused: {errors[0].message})"
            print(f"ok   {name}{why}")
        else:
            failures += 1
            detail = "; ".join(e.message for e in errors[:3]) or "accepted"
            print(f"FAIL {name}: expected {'valid' if should_pass else 'invalid'}, got {detail}")
    if failures:
        sys.exit(1)
    print(f"values.schema.json: {len(cases)} values files checked")


if __name__ == "__main__":
    main()
