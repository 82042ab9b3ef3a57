-- A policy that adds a field to the counterd table while it loads: refused (the table is
-- shared by every policy and role; state goes through counterd.shared).
counterd.x = 1
return { decide = function() return "deliver" end }
