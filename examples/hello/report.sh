#!/bin/sh
# Fan-in step of examples/hello: combine the three parallel results into report.txt.
set -eu

words=$(cat "$FERRY_INPUT_COUNT_WORDS/words.txt")
lines=$(cat "$FERRY_INPUT_COUNT_LINES/lines.txt")
shout=$(cat "$FERRY_INPUT_SHOUT/shout.txt")
report="$FERRY_OUTPUT_DIR/report.txt"

{
    echo "$FERRY_PARAM_GREETING, $FERRY_PARAM_NAME!"
    echo
    echo "  pipeline : $FERRY_PIPELINE (run $FERRY_RUN_ID)"
    echo "  lines    : $lines"
    echo "  words    : $words"
    echo "  shouted  : $shout"
    echo
    echo "Four steps fed this report: fetch, then count-words, count-lines and shout side by side."
} > "$report"

cat "$report"
