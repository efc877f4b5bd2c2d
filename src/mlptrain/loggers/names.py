"""Logger name -> implementation ("module:attr", imported on first use).  Torch-free: config validation
and ``mlptrain --help`` read it.  Adding a logger: one class, one line here, ``trainer.loggers=[...]``."""

LOGGERS = {
    "tensorboard": "mlptrain.loggers.tensorboard:TensorBoard",
    "csv": "mlptrain.loggers.csv:CSVLogger",
}
