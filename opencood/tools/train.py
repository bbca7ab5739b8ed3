"""Train a model: ``python opencood/tools/train.py -y CONFIG.yaml`` or ``-y None --model_dir RUN_DIR``."""
from opencood.tools.trainer import main

if __name__ == "__main__":
    main()
