#!/usr/bin/env python3
"""A real Confluent Cloud client, cc-clients-python-lib's IamClient, aimed at keygate.

Run by tests/integration/python_client.rs inside the venv of ensure_venv.py. Reads from the
environment: KEYGATE_URL (keygate's base URL; when unset the library keeps its own,
https://api.confluent.cloud, and reaches keygate's egress listener through HTTPS_PROXY, trusting
REQUESTS_CA_BUNDLE), ALLOWED_KEY/ALLOWED_SECRET (a caller the matrix
allows), DENIED_KEY/DENIED_SECRET (one it refuses), OWNER (a service account) and RESOURCE
(a Kafka cluster). Creates a key for OWNER, finds it in the list, deletes it, then tries the
same create as the refused caller. Asserts each step and prints a JSON summary on stdout; never
prints a secret.
"""

import json
import os
import sys

from cc_clients_python_lib.iam_client import IamClient


def client(key, secret):
    iam = IamClient(
        {
            "confluent_cloud_api_key": os.environ[key],
            "confluent_cloud_api_secret": os.environ[secret],
        }
    )
    # The library's documented way to aim it elsewhere; egress mode leaves it alone.
    if os.environ.get("KEYGATE_URL"):
        iam.base_url = os.environ["KEYGATE_URL"]
    return iam


def check(condition, message):
    if not condition:
        sys.exit(f"cc_client_flow: {message}")


def main():
    owner = os.environ["OWNER"]
    resource = os.environ["RESOURCE"]
    allowed = client("ALLOWED_KEY", "ALLOWED_SECRET")

    status, error, pair = allowed.create_api_key(
        resource_id=resource,
        principal_id=owner,
        display_name="cc-client-flow",
        description="created through keygate by cc-clients-python-lib",
    )
    check(status == 202, f"create: status {status}: {error}")
    key = pair["key"]
    check(len(key) == 16, f"create: unexpected key id {key!r}")
    check(pair["secret"].startswith("cflt"), "create: the secret is not a Confluent secret")

    status, error, keys = allowed.get_all_api_keys_by_principal_id(principal_id=owner)
    check(status == 200, f"list: status {status}: {error}")
    check(key in keys, f"list: {key} not among {sorted(keys)}")
    check(keys[key]["resource_id"] == resource, f"list: {keys[key]}")
    check(keys[key]["display_name"] == "cc-client-flow", f"list: {keys[key]}")

    status, error = allowed.delete_api_key(api_key=key)
    check(status == 204, f"delete: status {status}: {error}")

    denied = client("DENIED_KEY", "DENIED_SECRET")
    status, error, body = denied.create_api_key(
        resource_id=resource,
        principal_id=owner,
        display_name="not-allowed",
        description="",
    )
    check(status == 403, f"denied create: status {status}")
    # The library parsed keygate's error body as JSON.
    check(isinstance(body, dict) and "errors" in body, f"denied create: body {body!r}")
    denial = body["errors"][0]
    check("403" in error, f"denied create: the library's message: {error}")

    json.dump(
        {
            "created": key,
            "listed": sorted(keys),
            "deleted_status": 204,
            "denial": {
                "status": denial["status"],
                "code": denial["code"],
                "detail": denial["detail"],
                "rule_ids": denial.get("meta", {}).get("rule_ids"),
            },
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
