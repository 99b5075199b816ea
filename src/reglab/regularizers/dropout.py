from reglab.errors import ConfigError
from reglab.regularizers.base import Regularizer
from reglab.values import EachValue, dropout_rate

DEFAULT_RATE = 0.1  # a site whose model recommends no rate: the usual Transformer rate, Srivastava's low conv end


class Dropout(Regularizer):
    """Sets the rate of the model's named dropout sites (``model.dropout_sites()``: site type ->
    modules). ``rates`` sets a type's rate (e.g. conv, fc); ``p`` sets every other type; with ``p`` null, each type
    gets the rate its model recommends (``model.dropout_defaults``, e.g. the CNN's fc 0.5, conv 0), else 0.1."""

    name = "dropout"
    rules = {"p": dropout_rate, "rates": EachValue(dropout_rate)}

    def __init__(self, p: float | None = None, rates: dict | None = None):
        super().__init__()
        self.p = None if p is None else float(p)
        self.rates = {site: float(rate) for site, rate in dict(rates or {}).items()}

    def site_rates(self, site_types, defaults: dict | None = None) -> dict[str, float]:
        unknown = sorted(set(self.rates) - set(site_types))
        if unknown:
            raise ConfigError(f"reg.{self.name}.rates: unknown site type(s) {unknown}; this model has {sorted(site_types)}")
        fallback = {site: (defaults or {}).get(site, DEFAULT_RATE) if self.p is None else self.p for site in site_types}
        return {site: self.rates.get(site, fallback[site]) for site in site_types}

    def configure(self, model) -> None:
        sites = model.dropout_sites()
        for site, rate in self.site_rates(sites, getattr(model, "dropout_defaults", None)).items():
            for module in sites[site]:
                module.p = rate
