"""The ``demand:`` section of a region in tritonops.yaml.

    regions:
      eu-west-1:
        demand:
          window_s: 900
          hysteresis: 0.25                 # a loaded model's priority counts this much more
          max_loads_per_run: 4             # per server; pinned models are outside the cap
          sources:
            - kind: triton                 # the region's servers' own statistics (loaded models only)
            - kind: prometheus
              url: http://prometheus:9090
              query: sum by (model) (increase(gateway_requests_total[15m]))
              model_label: model           # or path_label: path, for /v2/models/<name>/infer
            - kind: json
              url: https://demand.internal/counts.json   # or a file path / file:// URL
            - kind: envoy                  # the region's Envoy (tritonops route): every request, misses too
              admin: 127.0.0.1:9901
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TritonSource(_Strict):
    kind: Literal["triton"] = "triton"


class PrometheusSource(_Strict):
    kind: Literal["prometheus"] = "prometheus"
    url: str
    query: str
    model_label: str | None = "model"
    path_label: str | None = None  # a label holding /v2/models/<name>[/versions/<n>]/infer
    timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_label(self) -> PrometheusSource:
        if self.path_label:
            object.__setattr__(self, "model_label", None)
        if not self.model_label and not self.path_label:
            raise ValueError("give model_label or path_label")
        return self


class JsonSource(_Strict):
    """A file or URL holding ``{"models": {"<name>": <requests in the window>, ...}}``."""

    kind: Literal["json"] = "json"
    url: str
    timeout_s: float = Field(10.0, gt=0)


class EnvoySource(_Strict):
    """The region's Envoy (``tritonops route``): requests per model cluster, and misses (requests for a
    model placed nowhere, answered 503), read from its admin's ``/stats`` as differences between runs."""

    kind: Literal["envoy"] = "envoy"
    admin: str  # host:port of Envoy's admin interface (regions.<r>.route.admin)
    timeout_s: float = Field(10.0, gt=0)


Source = Annotated[TritonSource | PrometheusSource | JsonSource | EnvoySource, Field(discriminator="kind")]


class DemandSettings(_Strict):
    window_s: float = Field(900.0, gt=0)
    hysteresis: float = Field(0.25, ge=0)
    max_loads_per_run: int = Field(4, ge=1)
    sources: list[Source] = Field(default_factory=list)
