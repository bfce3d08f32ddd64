"""Entry point: ``python cli.py fit --config configs/td3bc_hopper.yaml``. See policylab/cli.py."""

from policylab.cli import main

if __name__ == "__main__":
    main()
