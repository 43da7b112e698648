"""Struct conversion at the API boundary."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from praxis_grpc.api.convert import dict_to_struct, struct_to_dict
from praxis_grpc.errors import InvalidArgument


def test_round_trip_keeps_integers_integral() -> None:
    data = {"n": 3, "x": 2.5, "s": "é", "b": True, "none": None, "list": [1, {"deep": [2.0]}]}
    message = dict_to_struct(data)
    assert message is not None
    back = struct_to_dict(message)
    assert back == {"n": 3, "x": 2.5, "s": "é", "b": True, "none": None, "list": [1, {"deep": [2]}]}
    assert isinstance(back["n"], int)
    assert isinstance(back["x"], float)


def test_non_finite_numbers_are_rejected_with_their_path() -> None:
    message = struct_pb2.Struct()
    message.update({"outer": {"values": [1, 2]}})
    outer = message.fields["outer"].struct_value
    outer.fields["values"].list_value.values[1].number_value = float("nan")
    with pytest.raises(InvalidArgument, match=r"arguments\.outer\.values\[1\]: nan"):
        struct_to_dict(message)
