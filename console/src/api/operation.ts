/** An operation of src/api/ops, as the codegen writes it: its text and, as phantom types, its result and variables. */
export type Operation<Result, Variables> = {
  name: string;
  kind: 'query' | 'mutation' | 'subscription';
  text: string;
  /** Never set: carries the types. */
  readonly __types?: [Result, Variables];
};
