-- GET /user_management/users/{id} over the ids in the file named by IDS (one per line).
local ids = {}
function init(args)
  for line in io.lines(os.getenv("IDS")) do
    table.insert(ids, line)
  end
end
function request()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/user_management/users/" .. id, {
    ["Authorization"] = "Bearer " .. os.getenv("KEY"),
  })
end
function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("non-200: " .. status .. "\n")
  end
end
