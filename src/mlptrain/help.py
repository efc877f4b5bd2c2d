"""``mlptrain --help`` without Hydra's group scan.

Hydra's ``--help`` lists the options of every config group, its own ~40 included,
building a fresh config repository for each: over a second on a slow machine,
for lines our help template does not even show.  This renders the same template
(``hydra.help`` in config.yaml) from one compose and the package's own group
folders.  Anything it does not cover (``$HYDRA_CONFIG_GROUPS`` in the template,
another config path or name) is left to Hydra.
"""

from __future__ import annotations

import string

from omegaconf import OmegaConf


def app_help(argv: list[str]) -> bool:
    """Print the help for ``argv`` (which holds --help) and return True, or return False to let Hydra do it."""
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser

    from mlptrain.cli import CONFIG_PACKAGE, check_group_overrides, compose_error, config_groups

    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.config_path or args.config_name or args.config_dir or args.hydra_help:
        return False
    check_group_overrides(args.overrides)
    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            cfg = compose(config_name="config", overrides=args.overrides, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - Hydra's compose errors, as one line
        raise compose_error(e) from None
    template = cfg.hydra.help.template
    if "$HYDRA_CONFIG_GROUPS" in template or "${HYDRA_CONFIG_GROUPS}" in template:
        return False
    groups = "".join(f"{g}: {', '.join(opts)}\n" for g, opts in sorted(config_groups().items()))
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    print(string.Template(template).substitute(
        FLAGS_HELP=_flags(parser), HYDRA_CONFIG_GROUPS="", APP_CONFIG_GROUPS=groups,
        CONFIG=OmegaConf.to_yaml(job, resolve=args.resolve)))
    return True


def _flags(parser) -> str:
    from hydra._internal.hydra import Hydra

    return Hydra.format_args_help(parser)
