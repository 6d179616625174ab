"""EC2 instance metadata service (IMDS) as a spot instance sees it.

Faithful where watchers and SDKs look: IMDSv2 tokens (`PUT /latest/api/token`, 400 on a bad
TTL, 403 on a versioned token path or `X-Forwarded-For`, the remaining TTL counted down in a
response header), `Server: EC2ws`, `Connection: close`, XHTML 404 pages on every unknown path,
`spot/instance-action` with a FIXED `time`, the legacy `spot/termination-time` (left behind,
stale, after a failed termination), rebalance recommendations, scheduled maintenance events with
their `21 Jan 2019 09:00:43 GMT` dates, the instance identity document, `user-data`, and IAM
role credentials (botocore reads them). Sources: reference/notices.md §1 (AWS user guide
`instancedata-data-retrieval.md`, `configuring-instance-metadata-service.md`,
`spot-instance-termination-notices.md`, `monitoring-instances-status-check_sched.md`).

IMDSv2 is REQUIRED by default, as on new instance types and AMIs with `ImdsSupport=v2.0`
(`HttpTokens=required`): a request without a token gets 401 and a warning in the emulator's log,
so a handler that never fetches a token fails here, not in production. `imdsv2_required=False`
(`spotrun emulate aws --allow-imdsv1`) also answers tokenless requests (`HttpTokens=optional`).

Control operations beyond the shared ones (see `spotrun.emulators.base`):
    POST /_spotrun/fail-termination   the instance survived: instance-action goes away,
                                      termination-time stays with its original (past) time
    POST /_spotrun/expire-tokens      every issued token becomes invalid (next use gets 401)
    POST /_spotrun/token {"mode": "ok"|"hang"|"gone"}
                                      token endpoint works | never answers (hop limit) | 404
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from spotrun.emulators.base import ControlError, Emulator, TokenBook, tree_lookup
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
RECLAIM_ACTIONS = ("terminate", "stop", "hibernate")
MAINTENANCE_CODES = (
    "system-reboot",
    "instance-reboot",
    "system-maintenance",
    "instance-retirement",
    "instance-stop",
)
TOKEN_MODES = ("ok", "hang", "gone")

_PAGE = """<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
         "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>{status} - {reason}</title>
 </head>
 <body>
  <h1>{status} - {reason}</h1>
 </body>
</html>
"""


def iso_z(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_date(when: datetime) -> str:
    """The maintenance-event date format, Go layout `2 Jan 2006 15:04:05 GMT`."""
    return f"{when.day} {when.strftime('%b %Y %H:%M:%S')} GMT"


class AwsEmulator(Emulator):
    cloud = "aws"
    title = "AWS"
    DEFAULTS = {"id": "i-0123456789abcdef0", "type": "g5.xlarge", "zone": "us-east-1a"}

    def __init__(
        self,
        *,
        imdsv2_required: bool = True,
        profile: InstanceProfile | None = None,
        role: str = "spotrun-emulator-role",
    ) -> None:
        super().__init__(profile)
        self.imdsv2_required = imdsv2_required
        self.token_mode = "ok"
        self.tokens = TokenBook()
        self.instance_action: dict[str, str] | None = None
        self.termination_time: str | None = None
        self.rebalance: dict[str, str] | None = None
        self.scheduled: list[dict[str, str]] = []
        self._static = self._facts(role)

    def _facts(self, role: str) -> dict[str, str]:
        """Every path that reports an instance fact, all from the one profile."""
        p = self.profile
        zone = str(p.zone)
        region = zone[:-1] if zone[-1:].isalpha() else zone
        facts = {
            "meta-data/ami-id": "ami-0123456789abcdef0",
            "meta-data/hostname": "ip-10-0-0-1.ec2.internal",
            "meta-data/local-hostname": "ip-10-0-0-1.ec2.internal",
            "meta-data/instance-action": "none",
            "meta-data/instance-id": str(p.id),
            "meta-data/instance-life-cycle": p.lifecycle,
            "meta-data/instance-type": str(p.type),
            "meta-data/local-ipv4": "10.0.0.1",
            "meta-data/placement/availability-zone": zone,
            "meta-data/placement/region": region,
            f"meta-data/iam/security-credentials/{role}": json.dumps(
                {
                    "Code": "Success",
                    "LastUpdated": iso_z(utcnow()),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": "ASIASPOTRUNEMULATOR0",
                    "SecretAccessKey": "spotrun-emulator-fake-secret-not-a-credential",
                    "Token": "spotrun-emulator-fake-session-token",
                    "Expiration": iso_z(utcnow() + timedelta(hours=6)),
                },
                indent=2,
            ),
            # EC2's own layout, `"key" : value` with two-space indent (AWS user guide,
            # instance-identity-documents.md); unsigned here: no signature/pkcs7 is served.
            "dynamic/instance-identity/document": json.dumps(
                {
                    "accountId": "123456789012",
                    "architecture": "x86_64",
                    "availabilityZone": zone,
                    "billingProducts": None,
                    "devpayProductCodes": None,
                    "marketplaceProductCodes": None,
                    "imageId": "ami-0123456789abcdef0",
                    "instanceId": p.id,
                    "instanceType": p.type,
                    "kernelId": None,
                    "pendingTime": iso_z(utcnow()),
                    "privateIp": "10.0.0.1",
                    "ramdiskId": None,
                    "region": region,
                    "version": "2017-09-30",
                },
                indent=2,
                separators=(",", " : "),
            ),
        }
        if p.user_data is not None:  # no user data: EC2 answers 404, and so do we
            facts["user-data"] = p.user_data
        return facts

    # --- notices ----------------------------------------------------------------------------

    def trigger(
        self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None
    ) -> dict[str, Any]:
        self.check_kind(kind, ("reclaim", "rebalance", "maintenance"))
        now = utcnow()
        if kind == "rebalance":
            self.rebalance = {"noticeTime": iso_z(now)}
            return self.rebalance
        if kind == "maintenance":
            code = action or "system-reboot"
            if code not in MAINTENANCE_CODES:
                raise ControlError(f"unknown maintenance code {code!r}; use one of {MAINTENANCE_CODES}")
            start = now + timedelta(seconds=lead_s if lead_s is not None else 14 * 86400)
            event = {
                "NotBefore": event_date(start),
                "Code": code,
                "Description": f"scheduled {code.replace('-', ' ')}",
                "EventId": f"instance-event-{len(self.scheduled):017x}",
                "NotAfter": event_date(start + timedelta(minutes=15)),
                "State": "active",
            }
            self.scheduled.append(event)
            return event
        action = action or "terminate"
        if action not in RECLAIM_ACTIONS:
            raise ControlError(f"unknown spot action {action!r}; use one of {RECLAIM_ACTIONS}")
        # Hibernation starts at once: a notice, but no two-minute warning.
        lead = lead_s if lead_s is not None else (0.0 if action == "hibernate" else 120.0)
        when = iso_z(now + timedelta(seconds=lead))  # fixed now; never recomputed per request
        self.instance_action = {"action": action, "time": when}
        self.termination_time = when if action == "terminate" else None
        return self.instance_action

    def fail_termination(self) -> dict[str, Any]:
        """EC2 could not terminate: the request is `fulfilled` again, the old time lingers."""
        self.instance_action = None
        return {"termination-time": self.termination_time}

    def expire_tokens(self) -> None:
        self.tokens.revoke_all()

    def set_token_mode(self, mode: str) -> dict[str, str]:
        if mode not in TOKEN_MODES:
            raise ControlError(f"unknown token mode {mode!r}; use one of {TOKEN_MODES}")
        self.token_mode = mode
        return {"mode": mode}

    def clear(self) -> None:
        self.instance_action = None
        self.termination_time = None
        self.rebalance = None
        self.scheduled = []

    def state(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "imdsv2_required": self.imdsv2_required,
            "token_mode": self.token_mode,
            "spot/instance-action": self.instance_action,
            "spot/termination-time": self.termination_time,
            "events/recommendations/rebalance": self.rebalance,
            "events/maintenance/scheduled": self.scheduled,
        }

    def control_ops(self) -> dict[str, Any]:
        return {
            "fail-termination": self.fail_termination,
            "expire-tokens": self.expire_tokens,
            "token": self.set_token_mode,
        }

    # --- HTTP -------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.put("/{version}/api/token", self._token),
            web.route("*", "/{path:.*}", self._metadata),  # unknown paths get EC2's 404, not aiohttp's
        ]

    def _values(self) -> dict[str, str]:
        values = dict(self._static)
        if self.instance_action:
            values["meta-data/spot/instance-action"] = json.dumps(self.instance_action, separators=(",", ":"))
        if self.termination_time:
            values["meta-data/spot/termination-time"] = self.termination_time
        if self.rebalance:
            values["meta-data/events/recommendations/rebalance"] = json.dumps(self.rebalance)
        # Always present: with nothing scheduled EC2 answers 200 `[]`, and aws-node-termination-
        # handler treats any non-2xx here as an error (NTH `scheduled-event-monitor.go`).
        values["meta-data/events/maintenance/scheduled"] = json.dumps(self.scheduled, indent=2)
        values["meta-data/events/maintenance/history"] = "[]"
        return values

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["version"] != "latest" or "X-Forwarded-For" in request.headers:
            return _page(403, "Forbidden")
        if self.token_mode == "hang":  # hop limit 1 from a container: the answer never arrives
            await self.wait_stopping(None)
            return _page(504, "Gateway Timeout")
        if self.token_mode == "gone":
            return _page(404, "Not Found")
        ttl = TokenBook.parse_ttl(request.headers.get(TTL_HEADER))
        if ttl is None:
            return _page(400, "Missing or Invalid Parameters")
        response = _plain(self.tokens.issue(ttl))
        response.headers[TTL_HEADER] = str(ttl)
        return response

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _page(405, "Method Not Allowed")
        token = request.headers.get(TOKEN_HEADER)
        remaining = self.tokens.remaining(token) if token else None
        if token and remaining is None:
            return _page(401, "Unauthorized")
        if not token and self.imdsv2_required:
            self.log.warning(
                "refused %s %s without an IMDSv2 token (401, as EC2 with HttpTokens=required): "
                "PUT /latest/api/token first, or start the emulator with --allow-imdsv1",
                request.method, request.path,
            )
            return _page(401, "Unauthorized")
        body = self._lookup(request.match_info["path"])
        if body is None:
            return _page(404, "Not Found")
        response = _plain(body)
        if remaining is not None:
            response.headers[TTL_HEADER] = str(remaining)
        return response

    def _lookup(self, path: str) -> str | None:
        """`/` lists the versions, `/latest/` the categories, anything below comes from the tree."""
        path = path.strip("/")
        if not path:
            return "latest"
        version, _, rest = path.partition("/")
        if version != "latest":
            return None
        body = tree_lookup(self._values(), rest)
        return body.replace("/", "") if body is not None and not rest else body


def _headers(response: web.Response) -> web.Response:
    response.headers["Server"] = "EC2ws"
    response.force_close()  # IMDS answers `Connection: close`
    return response


def _plain(body: str) -> web.Response:
    return _headers(web.Response(body=body.encode(), content_type="text/plain"))


def _page(status: int, reason: str) -> web.Response:
    return _headers(
        web.Response(
            status=status,
            text=_PAGE.format(status=status, reason=reason),
            content_type="text/html",
        )
    )
