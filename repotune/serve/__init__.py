"""``repotune serve``: a finished run's model kept loaded behind a local HTTP API.

The commit hook, ``repotune suggest``/``complete`` and editor plugins ask one warm process
instead of paying seconds of imports and loading per question:

* ``state``: the user's token file (0600) and one state file per running server (its port), in
  a directory only the user can enter; how a client finds a server and a server proves it runs;
* ``protocol``: the requests the API accepts (OpenAI's ``/v1/completions``, repotune's commit
  messages), checked into plain values, and the JSON it answers; no torch;
* ``engine``: the loaded model and the one lock every generation takes; the prompts come from
  the command line's own builders (:mod:`repotune.cli.complete`, :mod:`repotune.cli.suggest`),
  the answers from :mod:`repotune.inference.decoding`, so a request gives what the command
  prints for the same input;
* ``server``: the HTTP layer (stdlib ``ThreadingHTTPServer``): bearer token, bounded bodies and
  connections, idle shutdown;
* ``client``: what the hook and the command line use to reach a server, standard library only
  (no torch: a warm suggestion costs the client well under a second).
"""
