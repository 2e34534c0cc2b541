-- POST /user_management/users with a unique email per request (thread id + counter).
-- KEY is read from the environment (wrk's Lua has os.getenv).
local counter = 0
local tid = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  tid = tonumber(wrk.thread:get("tid")) or 0
end
function request()
  counter = counter + 1
  local body = string.format('{"email":"wrk-%d-%d-%d@example.com"}', os.time(), tid, counter)
  return wrk.format("POST", "/user_management/users", {
    ["Authorization"] = "Bearer " .. os.getenv("KEY"),
    ["Content-Type"] = "application/json",
  }, body)
end
function response(status, headers, body)
  if status ~= 201 then
    io.stderr:write("non-201: " .. status .. " " .. body .. "\n")
  end
end
