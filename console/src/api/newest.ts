/** Orders the answers of overlapping reloads of one page: a page that reloads on every live event may have several
 * requests in flight, and under load an earlier one can answer after a later one. `ask()` numbers a request;
 * `fresher(n)` says whether its answer is newer than any shown (and marks it shown), so that a late, older answer
 * never takes the page back to an earlier state. */
export function newest() {
  let asked = 0;
  let shown = 0;
  return {
    ask: () => ++asked,
    fresher: (n: number) => {
      if (n <= shown) return false;
      shown = n;
      return true;
    },
  };
}
