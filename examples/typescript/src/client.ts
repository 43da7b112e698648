// A typed praxis client: the code under gen/ is generated from protos/ by
// `npm run generate` (buf generate with ts-proto; see buf.gen.yaml at the
// repository root). Submits a task, watches it to a terminal state and lists
// the agent cards; prints one JSON object.
//
//   npm ci && npm run generate && npm run build
//   node dist/client.js [--target HOST:PORT] [TOOL [ARGUMENTS_JSON]]
//
// ts-proto maps google.protobuf.Struct to plain objects, so arguments and
// results are written as JSON values (no Value wrappers to get wrong).
import { credentials, Metadata, ServiceError, status } from "@grpc/grpc-js";
import { CardServiceClient, ListCardsRequest } from "./gen/praxis/v1/card_service";
import { SubmitTaskRequest, TaskServiceClient } from "./gen/praxis/v1/task_service";
import { Task, TaskState, taskStateToJSON } from "./gen/praxis/v1/types";

const TERMINAL = new Set<TaskState>([
  TaskState.TASK_STATE_COMPLETED,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_CANCELED,
  TaskState.TASK_STATE_REJECTED,
]);

interface Options {
  target: string;
  tool: string;
  args: { [key: string]: unknown };
}

function parseArgs(argv: string[]): Options {
  let target = process.env.PRAXIS_TARGET ?? "127.0.0.1:50051";
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--target") target = argv[++i];
    else rest.push(argv[i]);
  }
  return {
    target,
    tool: rest[0] ?? "calculator",
    args: JSON.parse(rest[1] ?? '{"expression": "6*7"}'),
  };
}

function deadline(): Date {
  return new Date(Date.now() + 10_000);
}

function submit(tasks: TaskServiceClient, tool: string, args: object): Promise<Task> {
  return new Promise((resolve, reject) => {
    const request = SubmitTaskRequest.fromPartial({ tool, arguments: args });
    tasks.submitTask(request, new Metadata(), { deadline: deadline() }, (error, response) =>
      error || !response.task ? reject(error ?? new Error("no task")) : resolve(response.task),
    );
  });
}

function watchUntilDone(tasks: TaskServiceClient, taskId: string): Promise<Task> {
  return new Promise((resolve, reject) => {
    const stream = tasks.watchTask({ taskId });
    stream.on("data", (event: { task?: Task }) => {
      if (event.task && TERMINAL.has(event.task.state)) {
        stream.cancel();
        resolve(event.task);
      }
    });
    stream.on("error", (error: ServiceError) => {
      if (error.code !== status.CANCELLED) reject(error);
    });
    stream.on("end", () => reject(new Error(`watch of ${taskId} ended early`)));
  });
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const insecure = credentials.createInsecure();
  const tasks = new TaskServiceClient(options.target, insecure);
  const cards = new CardServiceClient(options.target, insecure);
  try {
    const submitted = await submit(tasks, options.tool, options.args);
    const task = await watchUntilDone(tasks, submitted.taskId);
    const listed = await new Promise<{ name: string; tools: string[] }[]>((resolve, reject) =>
      cards.listCards(
        ListCardsRequest.fromPartial({}),
        new Metadata(),
        { deadline: deadline() },
        (error, response) =>
          error
            ? reject(error)
            : resolve(response.cards.map((c) => ({ name: c.name, tools: c.tools.map((t) => t.name) }))),
      ),
    );
    console.log(
      JSON.stringify({
        task_id: task.taskId,
        state: taskStateToJSON(task.state),
        result: task.result ?? null,
        cards: listed,
      }),
    );
  } finally {
    tasks.close();
    cards.close();
  }
}

main().catch((error: Error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
