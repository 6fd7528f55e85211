"""HTTP clients of the service and of the feeder's control endpoint: the dashboard's only data source.

Every failure (nothing listening, a timeout, an error status, a body that is not JSON) becomes one
`Unavailable` carrying what went wrong and the command that fixes it, which the app shows as a banner:
an operator never sees a traceback. Bodies are parsed by pydantic-core (Rust): the current predictions
of 900 servers, with their 8-hour paths, are tens of MB of JSON.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import requests
from pydantic_core import from_json

Scenario = Literal["healthy", "degrading", "critical"]
#: The scenarios the feeder's control endpoint accepts, in the order the Advanced tab shows them.
SCENARIOS: tuple[Scenario, ...] = ("healthy", "degrading", "critical")

START_SERVICE = "start it with `tftmon serve`, or point the dashboard at it (Advanced tab, or `--service-url`)"
START_FEEDER = "start it with `tftmon feed --scenario degrading`, or set its URL in the Advanced tab"
NO_MODEL = (
    "promote a version with `tftmon promote`, then reload the service "
    "(`POST /admin/reload` with the admin token, or restart `tftmon serve`) and reload this page"
)


class Unavailable(RuntimeError):
    """No usable answer from the service or the feeder: what happened, the fix, and the HTTP status if any."""

    def __init__(self, message: str, fix: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.fix, self.status = message, fix, status


class _Api:
    """GET/POST JSON against one base URL, every failure as `Unavailable`."""

    def __init__(self, base_url: str, timeout: float, name: str, fix: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout, self.name, self.fix = timeout, name, fix

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = requests.request(method, url, json=body, timeout=self.timeout)
        except requests.Timeout:
            late = f"the {self.name} at {self.base_url} did not answer within {self.timeout:g} s"
            raise Unavailable(late, self.fix) from None
        except requests.RequestException as exc:
            reason = exc.__class__.__name__
            raise Unavailable(f"the {self.name} at {self.base_url} is not reachable ({reason})", self.fix) from None
        try:
            payload = from_json(response.content) if response.content else None
        except ValueError:
            payload = None
            if response.ok:
                raise Unavailable(
                    f"{url} answered {response.status_code} with something that is not JSON",
                    f"check that {self.base_url} is the {self.name}",
                    response.status_code,
                ) from None
        if not response.ok:
            error = payload.get("error") if isinstance(payload, dict) else None
            fix = payload.get("fix") if isinstance(payload, dict) else None
            raise Unavailable(
                f"{method} {path} answered {response.status_code}: {error or response.reason}",
                fix or f"check that {self.base_url} is the {self.name}",
                response.status_code,
            )
        return payload


class ServiceClient(_Api):
    """The tftmon service's read endpoints."""

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        super().__init__(base_url, timeout, "service", START_SERVICE)

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/status")

    def predictions(self) -> dict[str, Any]:
        """Every live server's latest forecast (with its per-step path) and the servers still warming up."""
        return self._request("GET", "/predictions/current")

    def alerts(self) -> dict[str, Any]:
        return self._request("GET", "/alerts/active")

    def current(self, tries: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
        """The current predictions and the active alerts of one forecast (the same `computed_at`).

        They are two requests, and the service may forecast anew between them: a screen built from both
        would count one forecast's severities beside another's alerts. The alerts (small) are read first;
        when the predictions turn out newer, the alerts are read again, and the predictions once more only
        if the service forecast yet again meanwhile.
        """
        alerts, predictions = self.alerts(), self.predictions()
        for _ in range(tries):
            if predictions["computed_at"] == alerts["computed_at"]:
                return predictions, alerts
            alerts = self.alerts()
            if predictions["computed_at"] == alerts["computed_at"]:
                return predictions, alerts
            predictions = self.predictions()
        raise Unavailable(
            f"the service at {self.base_url} forecast anew during each of {tries} reads of its predictions and "
            "alerts, so no consistent view of one forecast could be read",
            "reload this page; it persists only while the service forecasts faster than the dashboard reads "
            "(a feeder far ahead of real time: lower `tftmon feed --speed`)",
        )

    def alert_history(self) -> dict[str, Any]:
        return self._request("GET", "/alerts/history")

    def fleet(self) -> dict[str, Any]:
        return self._request("GET", "/fleet")

    def fleet_history(self) -> dict[str, Any]:
        return self._request("GET", "/fleet/history")

    def server_history(self, server_name: str) -> dict[str, Any]:
        """What the model read for the server's current forecast, at the model step (the fan chart's past)."""
        return self._request("GET", f"/servers/{quote(server_name, safe='')}/history")

    def explain(self, server_name: str) -> dict[str, Any]:
        """The TFT's own variable importance and attention for the server's current forecast."""
        return self._request("GET", f"/explain/{quote(server_name, safe='')}")


class FeederClient(_Api):
    """The live feeder's scenario control (`tftmon feed`)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        super().__init__(base_url, timeout, "feeder", START_FEEDER)

    def scenario(self) -> dict[str, Any]:
        return self._request("GET", "/scenario")

    def set_scenario(self, scenario: Scenario) -> dict[str, Any]:
        return self._request("POST", "/scenario", {"scenario": scenario})
