"""Checkpoint key renaming (HEAL's ``rename_model_dict_keys``; CLI: ``heal_tools.py rename_keys``)."""
from opencood.utils.checkpoint import atomic_torch_save, read_state_dict
from opencood.utils.errors import CheckpointError


def rename_model_dict_keys(pretrained_dict_path, rename_dict):
    """Rename (or drop) state-dict keys.

    ``rename_dict`` maps old -> new names. A trailing ``*`` renames a prefix (``{"encoder_m1.*":
    "encoder_m3.*"}``); an empty new name drops the key(s). Given a path, the file is rewritten in place
    atomically, as HEAL does; given a dict, a renamed copy is returned and nothing is written.

    Args:
        pretrained_dict_path: checkpoint path (plain state_dict) or a state_dict.
        rename_dict: {old: new}.

    Returns:
        the renamed state_dict.

    Raises:
        CheckpointError: an exact old name (or prefix) matches no key.
    """
    from_file = not isinstance(pretrained_dict_path, dict)
    where = pretrained_dict_path if from_file else "state_dict"
    state = read_state_dict(pretrained_dict_path) if from_file else dict(pretrained_dict_path)
    for old, new in rename_dict.items():
        if old.endswith("*"):
            prefix, new_prefix = old[:-1], new[:-1] if new.endswith("*") else new
            matched = [k for k in list(state) if k.startswith(prefix)]
            if not matched:
                raise CheckpointError(f"{where}: no key starts with '{prefix}' (rename_dict entry '{old}')")
            for k in matched:
                value = state.pop(k)
                if new:
                    state[new_prefix + k[len(prefix):]] = value
        else:
            if old not in state:
                raise CheckpointError(f"{where}: missing key '{old}' (rename_dict entry)")
            value = state.pop(old)
            if new:
                state[new] = value
    if from_file:
        atomic_torch_save(state, pretrained_dict_path)
    return state

