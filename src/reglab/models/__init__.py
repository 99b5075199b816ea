"""Models: one file each, one yaml each under conf/model/. What a model must offer: reglab.contracts.ClassifierModel."""


def build_model(model_cfg, datamodule):
    """The model of ``model_cfg`` sized by the (set-up) datamodule's ``model_kwargs``, checked against the model
    contract. The one place a model is built from config: training, evaluation and benchmarks."""
    from reglab.contracts import check_model
    from reglab.errors import instantiate

    if "tokens" in model_cfg:  # what tokens a text model is built for: read by the data config, not an argument
        model_cfg = {key: value for key, value in model_cfg.items() if key != "tokens"}
    model = instantiate(model_cfg, "model", **datamodule.model_kwargs)
    check_model(model)
    return model
