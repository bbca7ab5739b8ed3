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
