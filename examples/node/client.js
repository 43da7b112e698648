#!/usr/bin/env node
// A praxis client in Node.js, from protos/ alone: submit a task, watch it to
// a terminal state, list the agent cards the node knows. Prints one JSON
// object.
//
//   npm ci
//   node client.js [--target HOST:PORT] [--snake-case-struct] [TOOL [ARGUMENTS_JSON]]
//   node client.js --target 127.0.0.1:50050 calculator '{"expression": "6*7"}'
//
// --snake-case-struct sends the arguments with snake_case Value members, the
// trap described in struct.js, to show what the server then receives.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { toStruct, fromStruct } = require("./struct");

const PROTOS = process.env.PRAXIS_PROTOS || path.resolve(__dirname, "../../protos");
const TERMINAL = new Set([
  "TASK_STATE_COMPLETED",
  "TASK_STATE_FAILED",
  "TASK_STATE_CANCELED",
  "TASK_STATE_REJECTED",
]);

function parseArgs(argv) {
  const options = { target: process.env.PRAXIS_TARGET || "127.0.0.1:50051", snake: false };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--target") options.target = argv[++i];
    else if (argv[i] === "--snake-case-struct") options.snake = true;
    else rest.push(argv[i]);
  }
  options.tool = rest[0] || "calculator";
  options.arguments = JSON.parse(rest[1] || '{"expression": "6*7"}');
  return options;
}

function loadServices() {
  const definition = protoLoader.loadSync(
    ["praxis/v1/task_service.proto", "praxis/v1/card_service.proto"],
    {
      includeDirs: [PROTOS],
      keepCase: true, // task_id, not taskId: the names in the protos
      longs: String,
      enums: String, // "TASK_STATE_COMPLETED", not 3
      defaults: true,
      oneofs: true, // sets `kind` on a google.protobuf.Value
    },
  );
  return grpc.loadPackageDefinition(definition).praxis.v1;
}

// The trap, for demonstration: {fields: {k: {string_value: ...}}}.
function snakeCaseStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) {
    const member = typeof value === "number" ? "number_value" : "string_value";
    fields[key] = { [member]: value };
  }
  return { fields };
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10_000);
    client[method](request, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function watchUntilDone(tasks, taskId) {
  return new Promise((resolve, reject) => {
    const states = [];
    const stream = tasks.WatchTask({ task_id: taskId });
    stream.on("data", (event) => {
      states.push(event.task.state);
      if (TERMINAL.has(event.task.state)) {
        stream.cancel();
        resolve({ task: event.task, states });
      }
    });
    stream.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
    stream.on("end", () => reject(new Error(`watch of ${taskId} ended before a terminal state`)));
  });
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const v1 = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const tasks = new v1.TaskService(options.target, credentials);
  const cards = new v1.CardService(options.target, credentials);
  try {
    const submitted = await call(tasks, "SubmitTask", {
      tool: options.tool,
      arguments: options.snake ? snakeCaseStruct(options.arguments) : toStruct(options.arguments),
    });
    const { task, states } = await watchUntilDone(tasks, submitted.task.task_id);
    const listed = await call(cards, "ListCards", {});
    const output = {
      task_id: task.task_id,
      state: task.state,
      states,
      arguments: fromStruct(task.arguments),
      result: fromStruct(task.result),
      error: task.error ? task.error.message : "",
      cards: listed.cards.map((card) => ({
        name: card.name,
        agent_id: card.agent_id,
        tools: card.tools.map((tool) => tool.name),
      })),
    };
    console.log(JSON.stringify(output));
  } finally {
    tasks.close();
    cards.close();
  }
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
