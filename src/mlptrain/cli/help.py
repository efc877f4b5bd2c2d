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

from mlptrain.compose import args_help, compose_config, config_groups, parse_args


def app_help(argv: list[str]) -> bool:
    """Print the help for ``argv`` (which holds --help) and return True, or return False to let Hydra do it."""
    args = parse_args(argv)
    if args.config_path or args.config_name or args.config_dir or args.hydra_help:
        return False
    cfg = compose_config(args.overrides, hydra=True)
    template = cfg.hydra.help.template
    if "$HYDRA_CONFIG_GROUPS" in template or "${HYDRA_CONFIG_GROUPS}" in template:
        return False
    groups = "".join(f"{g}: {', '.join(opts)}\n" for g, opts in sorted(config_groups().items()))
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    print(
        string.Template(template).substitute(
            FLAGS_HELP=args_help(),
            HYDRA_CONFIG_GROUPS="",
            APP_CONFIG_GROUPS=groups,
            CONFIG=OmegaConf.to_yaml(job, resolve=args.resolve),
        )
    )
    return True
