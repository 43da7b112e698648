// google.protobuf.Struct <-> plain JavaScript values, for @grpc/proto-loader.
//
// The trap: proto-loader loads google/protobuf/struct.proto from its own
// bundled copy, whose Value oneof members are camelCase (numberValue,
// stringValue, boolValue, structValue, listValue, nullValue) even with
// keepCase: true, which keeps *our* fields (task_id, idempotency_key) in
// snake_case. A Value written {string_value: "x"} is sent as an empty Value
// and the server sees null. Build Values with toValue/toStruct below.
"use strict";

function toValue(value) {
  if (value === null || value === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof value === "number") return { numberValue: value };
  if (typeof value === "string") return { stringValue: value };
  if (typeof value === "boolean") return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  if (typeof value === "object") return { structValue: toStruct(value) };
  throw new TypeError(`cannot encode ${typeof value} in a google.protobuf.Value`);
}

function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

// With oneofs: true, proto-loader names the member that is set in `kind`.
function fromValue(value) {
  switch (value.kind) {
    case "nullValue":
      return null;
    case "numberValue":
      return value.numberValue;
    case "stringValue":
      return value.stringValue;
    case "boolValue":
      return value.boolValue;
    case "listValue":
      return (value.listValue.values || []).map(fromValue);
    case "structValue":
      return fromStruct(value.structValue);
    default:
      return null; // an empty Value: what snake_case oneof names produce
  }
}

function fromStruct(struct) {
  const object = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) {
    object[key] = fromValue(value);
  }
  return object;
}

module.exports = { toValue, toStruct, fromValue, fromStruct };
