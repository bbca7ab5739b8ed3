"""The per-modality input dict an encoder reads from a collated batch (``batch['ego']['inputs_mX']``)."""
from opencood.utils.errors import DataError


def modality_inputs(data_dict, modality_name, required_keys):
    """Return ``data_dict['inputs_<modality_name>']`` after checking it holds ``required_keys``.

    Raises:
        DataError: one line naming the missing batch key.
    """
    key = f"inputs_{modality_name}"
    if key not in data_dict:
        raise DataError(f"batch: missing key '{key}'")
    inputs = data_dict[key]
    missing = [k for k in required_keys if k not in inputs]
    if missing:
        raise DataError(f"batch['{key}']: missing key '{missing[0]}'")
    return inputs


def count_modality_agents(data_dict, modality_name):
    """Number of agents of ``modality_name`` in the batch (all agents when no ``agent_modality_list``).

    Read from the host-side ``agent_modality_list`` when present (no device sync), else ``record_len.sum()``.
    Returns None when neither is present.
    """
    modality_list = data_dict.get("agent_modality_list")
    if modality_list is not None:
        return sum(1 for m in modality_list if m == modality_name)
    record_len = data_dict.get("record_len")
    return int(record_len.sum().item()) if record_len is not None else None
