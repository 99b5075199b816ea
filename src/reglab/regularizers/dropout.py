from reglab.errors import ConfigError
from reglab.regularizers.base import Regularizer


def _check_rate(key: str, p) -> float:
    if p is None or not 0.0 <= float(p) < 1.0:
        raise ConfigError(f"reg.dropout.{key}={p!r}: a dropout rate must be in [0, 1)")
    return float(p)


class Dropout(Regularizer):
    """Sets the rate of the model's named dropout sites (``model.dropout_sites()``: site type ->
    modules). ``p`` is the rate for every type; ``rates`` overrides it per type (e.g. conv, fc)."""

    name = "dropout"

    def __init__(self, p: float = 0.2, rates: dict | None = None):
        super().__init__()
        self.p = _check_rate("p", p)
        self.rates = {site: _check_rate(f"rates.{site}", rate) for site, rate in dict(rates or {}).items()}

    def site_rates(self, site_types) -> dict[str, float]:
        unknown = sorted(set(self.rates) - set(site_types))
        if unknown:
            raise ConfigError(f"reg.dropout.rates: unknown site type(s) {unknown}; this model has {sorted(site_types)}")
        return {site: self.rates.get(site, self.p) for site in site_types}

    def configure(self, model) -> None:
        sites = model.dropout_sites()
        for site, rate in self.site_rates(sites).items():
            for module in sites[site]:
                module.p = rate
