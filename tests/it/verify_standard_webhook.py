"""Verifies one recorded delivery with the Standard Webhooks reference library from PyPI.

Usage: STANDARD_WEBHOOK_SECRET=whsec_... python3 verify_standard_webhook.py HEADERS.json BODY

Exit codes: 0 verified, 1 verification refused, 2 anything else went wrong, 3 the
`standardwebhooks` package is missing.
"""

import json
import os
import sys

try:
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError
except ImportError as e:
    print(f"{e}: run `pip install standardwebhooks`", file=sys.stderr)
    sys.exit(3)

try:
    with open(sys.argv[1], encoding="utf-8") as f:
        headers = json.load(f)
    with open(sys.argv[2], "rb") as f:
        body = f.read()
    webhook = Webhook(os.environ["STANDARD_WEBHOOK_SECRET"])
except Exception as e:  # noqa: BLE001 - any setup failure is not a refusal
    print(f"cannot verify: {e!r}", file=sys.stderr)
    sys.exit(2)

try:
    webhook.verify(body, headers, json_parse=False)
except WebhookVerificationError as e:
    print(f"refused: {e}", file=sys.stderr)
    sys.exit(1)
except Exception as e:  # noqa: BLE001 - a malformed header is not a clean refusal
    print(f"cannot verify: {e!r}", file=sys.stderr)
    sys.exit(2)
print("verified")
