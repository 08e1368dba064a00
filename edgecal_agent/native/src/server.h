// Running job directories (server.py): one job (run-job) or many over stdin (serve).
#pragma once

#include <cstdio>
#include <string>

#include "messages.h"
#include "workdir.h"

namespace edgecal {

// Run <workdir>/jobs/<job_id>; always leaves a response.json when the folder exists (as a
// real folder).  ProtocolViolation for a bad job id; SysError when the response cannot be
// written.
Response run_job(const Workdir& wd, const std::string& job_id, FILE* progress_to);
// Answer job ids read line by line from in; "EDGECAL-DONE <id>" on out once each response is
// written.  Stale job folders are removed first.
int serve(const Workdir& wd, FILE* in, FILE* out, FILE* err);

}  // namespace edgecal
